"""The frozen teacher of STL stage 2: one object builds, loads, freezes, checks and holds it."""
import copy
import glob
import os.path as osp
from typing import Optional

import torch
import torch.nn as nn
from mmpretrain.registry import MODELS

from stl_mm.models.backbones.fan_checkpoint import (CheckpointReadError, LoadReport,
                                                    load_checkpoint)
from stl_mm.utils import REPO_ROOT, non_finite_tensors

#: Where the student configs set the teacher (``--cfg-options`` reaches it by this name).
TEACHER_CONFIG_KEY = 'default_hooks.teacher'
#: The folder ``tools/demo.py`` trains its stage-1 token labeler into, under its --work-dir.
DEMO_STAGE1_DIR = 'stage1_token_labeler'


class FrozenTeacher:
    """The frozen teacher of an STL student and every rule about it.

    * Built from its own model config and loaded through the one loading API,
      :func:`~stl_mm.models.backbones.fan_checkpoint.load_checkpoint`, strictly (EMA weights
      first): a checkpoint of another size stops with the project's fit message.
    * Frozen (no parameter requires gradients) and in eval mode at every forward, which runs
      under ``torch.inference_mode`` and the surrounding autocast.
    * Checked: all weights finite (a NaN / inf checkpoint is refused, naming the file), the
      same class count as the student (:meth:`check_student`), and finite token logits at
      every forward (non-finite ones stop training, naming the file).
    * Outside the student: the student holds this object in a plain attribute, so the teacher
      is not a submodule: not in ``parameters()`` / ``state_dict()`` (so not in the optimizer
      or the saved checkpoints), not moved by ``.to()``, not wrapped by DDP; ``deepcopy`` of
      the student (mmengine's EMA copies the model) shares the teacher instead of copying it.

    Args:
        module: The teacher model (see :func:`token_logits_of`): a
            ``TokenLabelingClassifier`` with a token head, or a module whose
            ``module(images)`` returns token logits (N, K, h, w) or a tuple ending with them.
        checkpoint: The file its weights came from, named in messages.
        load_report: What :func:`load_checkpoint` loaded, when built by :meth:`from_config`.
    """

    def __init__(self,
                 module: nn.Module,
                 checkpoint: Optional[str] = None,
                 load_report: Optional[LoadReport] = None) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f'The teacher must be an nn.Module, got {type(module).__name__}.')
        self.module = module.requires_grad_(False).eval()
        self.checkpoint = checkpoint
        self.load_report = load_report

    @classmethod
    def from_config(cls, model_cfg: dict, checkpoint: str, use_ema: bool = True) -> 'FrozenTeacher':
        """Build the teacher from ``model_cfg``, load ``checkpoint`` strictly, freeze and check.

        Raises:
            CheckpointReadError: The checkpoint is missing (with the commands that make it)
                or unreadable.
            CheckpointMismatchError: It does not fit the teacher config.
            ValueError: It holds non-finite weights.
        """
        check_teacher_settings(model_cfg, checkpoint, use_ema)
        if '://' not in checkpoint and not osp.exists(checkpoint):
            raise CheckpointReadError(checkpoint,
                                      f'no such file. {missing_teacher_hint(checkpoint)}')
        module = MODELS.build(copy.deepcopy(model_cfg))
        teacher = cls(module, checkpoint, load_checkpoint(module, checkpoint, use_ema))
        teacher.check_finite()
        return teacher

    def check_finite(self) -> None:
        """Refuse non-finite weights: such a teacher gives every token the same label."""
        bad = non_finite_tensors(self.module.state_dict())
        if bad:
            raise ValueError(
                f'Teacher checkpoint {self.checkpoint} holds non-finite weights (NaN or inf) in '
                f'{len(bad)} tensors, e.g. {", ".join(bad[:5])}: the run that wrote it diverged. '
                f'Point {TEACHER_CONFIG_KEY}.checkpoint at an earlier, finite checkpoint of '
                'that run, or retrain it with a lower learning rate.')

    def check_student(self, student: nn.Module) -> None:
        """Fail before training when the teacher and student heads predict other class counts."""
        student_classes = getattr(getattr(student, 'head', None), 'num_classes', None)
        teacher_classes = getattr(getattr(self.module, 'head', None), 'num_classes', None)
        if None not in (student_classes, teacher_classes) and student_classes != teacher_classes:
            raise ValueError(
                f'Teacher and student class counts differ: the teacher predicts {teacher_classes} '
                f'classes, the student {student_classes}. Token labels need the same label '
                f'space: set {TEACHER_CONFIG_KEY}.model.head.num_classes to the student\'s and '
                'load a teacher checkpoint trained on the same classes.')

    def to(self, device: torch.device) -> 'FrozenTeacher':
        """Move the teacher (e.g. to the student's device); returns self."""
        self.module.to(device)
        return self

    def token_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Token logits (N, K, h, w) of the teacher on ``images``, without autograd state."""
        if self.module.training:
            self.module.eval()
        # Inference mode skips autograd bookkeeping entirely (cheaper than no_grad); autocast
        # stays as the caller set it, so under AMP the teacher runs in the AMP dtype.
        with torch.inference_mode():
            token_logits = token_logits_of(self.module, images)
        # Non-finite logits would become one label for every token (argmax) and train the
        # student with a finite loss: stop instead.
        if not torch.isfinite(token_logits).all():
            bad = int((~torch.isfinite(token_logits)).sum())
            raise FloatingPointError(
                f'The teacher loaded from {self.checkpoint} returned non-finite token logits '
                f'(NaN or inf in {bad} of {token_logits.numel()} values): it would give every '
                'token the same label. Its weights were finite when loaded, so it overflows '
                'on these images: check the teacher view (data_preprocessor, the DualView '
                'transform), train without --amp (float16 overflow), or point '
                f'{TEACHER_CONFIG_KEY}.checkpoint at another checkpoint.')
        return token_logits

    def describe(self) -> str:
        """One line for the log: the model, its size and the weights it holds."""
        num_params = sum(p.numel() for p in self.module.parameters())
        source = self.load_report.source if self.load_report is not None else 'set directly'
        return (f'teacher {type(self.module).__name__} ({num_params / 1e6:.2f}M frozen '
                f'parameters) loaded from {self.checkpoint} ({source})')

    def __deepcopy__(self, memo: dict) -> 'FrozenTeacher':
        return self


def token_logits_of(module: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Token logits (N, K, h, w) of a model following the teacher protocol.

    A model with ``class_and_token_logits`` (a ``TokenLabelingClassifier``) gives the second
    item of that method's output; any other module the output of ``module(images)``, or the
    last item of the tuple it returns.

    Raises:
        TypeError: The model gives no (N, K, h, w) tensor.
    """
    both = getattr(module, 'class_and_token_logits', None)
    output = both(images) if callable(both) else module(images)
    token_logits = output[-1] if isinstance(output, (tuple, list)) else output
    if not isinstance(token_logits, torch.Tensor) or token_logits.dim() != 4:
        shape = tuple(token_logits.shape) if isinstance(token_logits, torch.Tensor) else (
            type(token_logits).__name__)
        raise TypeError(
            'The teacher must return token logits (N, K, h, w), or a tuple ending with '
            f'them; got {shape}. A TokenLabelingClassifier teacher gives them through '
            'class_and_token_logits() when its head has with_token_head=True '
            f'({TEACHER_CONFIG_KEY}.model.head).')
    return token_logits


def check_teacher_settings(model: object, checkpoint: object, use_ema: object) -> None:
    """Refuse teacher settings of the wrong kind, naming the config option."""
    if not isinstance(model, dict):
        raise TypeError(f'{TEACHER_CONFIG_KEY}.model must be a model config dict, got '
                        f'{type(model).__name__}.')
    if not isinstance(checkpoint, str) or not checkpoint.strip():
        raise ValueError(f'{TEACHER_CONFIG_KEY}.checkpoint must be a non-empty str (the '
                         f'teacher checkpoint file), got {checkpoint!r}.')
    if not isinstance(use_ema, bool):
        raise TypeError(f'{TEACHER_CONFIG_KEY}.use_ema must be a bool (True: EMA weights '
                        f'when the checkpoint has them), got {use_ema!r}.')


def missing_teacher_hint(checkpoint: str) -> str:
    """The commands that produce a missing teacher checkpoint, and where to point to one.

    A checkpoint in ``work_dirs/<config name>/`` is made by training that config; one in the
    demo's ``<work dir>/stage1_token_labeler/`` by ``tools/demo.py``. Config paths are only
    suggested when they exist in this repository.
    """
    work_dir = osp.dirname(osp.normpath(checkpoint))
    name = osp.basename(work_dir)
    configs = sorted(glob.glob(osp.join(REPO_ROOT, 'configs', '**', f'{name}.py'),
                               recursive=True)) if name else []
    if configs:
        make = (f'train it (STL stage 1): `python tools/train.py '
                f'{osp.relpath(configs[0], REPO_ROOT)}` writes its checkpoints to '
                f'work_dirs/{name}/')
    elif name == DEMO_STAGE1_DIR:
        demo_config = osp.join('configs', 'stl', 'demo', 'fan_demo_token_labeler.py')
        make = (f'run the demo: `python tools/demo.py --work-dir {osp.dirname(work_dir) or "."}` '
                f'trains it (stage 1, {demo_config}) into {work_dir}/')
    else:
        labelers = sorted(osp.relpath(path, REPO_ROOT) for path in glob.glob(
            osp.join(REPO_ROOT, 'configs', 'stl', '*token_labeler.py')))
        make = ('train a token labeler (STL stage 1) with `python tools/train.py CONFIG`, '
                f'CONFIG one of {", ".join(labelers) or "the configs/stl/*_token_labeler.py"}')
    return (f'Either {make}; or convert an official STL teacher: '
            '`python tools/model_converters/fan_to_stl_mm.py SRC DST`. Then point '
            f'{TEACHER_CONFIG_KEY}.checkpoint at the file, e.g. '
            f'`--cfg-options {TEACHER_CONFIG_KEY}.checkpoint=PATH`.')
