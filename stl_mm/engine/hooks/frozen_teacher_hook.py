"""Hook that owns the frozen teacher of STL stage 2."""
import copy
import os.path as osp
import re
from typing import Optional

import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.registry import MODELS

from stl_mm.models.backbones.fan_checkpoint import (is_official_layout, official_to_stl_mm,
                                                    read_checkpoint)
from stl_mm.registry import register

#: The work directory a stage-1 config leaves its checkpoints in.
_STAGE1_WORK_DIR = re.compile(r'work_dirs/(?P<config>[^/]+_token_labeler)/')


@register('HOOKS', codebases=('mmpretrain', ))
class FrozenTeacherHook(Hook):
    """Build, load, freeze and attach the teacher of a STL student.

    At the start of every training run (also a resumed one) the hook builds the teacher
    from its own model config, so the teacher may be any FAN preset (heterogeneous
    teachers) or any model following the teacher protocol of
    :class:`~stl_mm.models.classifiers.TokenLabelingClassifier`. It loads the weights with
    :func:`~stl_mm.models.backbones.fan_checkpoint.read_checkpoint` (EMA weights when the
    file has them and ``use_ema``; official FAN / STL checkpoints are converted), freezes
    them, moves the teacher to the student's device, switches it to eval mode and attaches it
    with ``set_teacher``. The teacher is not a submodule of the student, so it is not
    trained, not in the optimizer, not in the EMA model, not wrapped by DDP and not saved in
    student checkpoints. It is put back in eval mode before every training iteration.

    Validation and testing do not need the teacher, so ``tools/test.py`` on a student config
    does not read the teacher checkpoint.

    Args:
        model: Config of the teacher model, e.g. a ``TokenLabelingClassifier`` with a FAN
            backbone and a ``TokenLabelingHead(with_token_head=True)``.
        checkpoint: Teacher checkpoint: the stage-1 checkpoint from
            ``work_dirs/fan_<size>_token_labeler/``, or an official STL teacher (as is, or
            converted by ``tools/model_converters/fan_to_stl_mm.py``).
        use_ema: Load the EMA weights when the checkpoint has them. Defaults to True.
    """

    priority = 'ABOVE_NORMAL'  # before EMAHook (NORMAL)

    def __init__(self, model: dict, checkpoint: str, use_ema: bool = True) -> None:
        if not isinstance(model, dict):
            raise TypeError('FrozenTeacherHook: model must be a model config dict, got '
                            f'{type(model).__name__}.')
        self.model_cfg = copy.deepcopy(model)
        self.checkpoint = checkpoint
        self.use_ema = use_ema
        self.teacher: Optional[nn.Module] = None

    def before_train(self, runner) -> None:
        """Build and attach the teacher (every run, so resuming reloads it too)."""
        student = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not hasattr(student, 'set_teacher'):
            raise TypeError('FrozenTeacherHook needs a model with set_teacher() (a '
                            "TokenLabelingClassifier with mode='student'); got "
                            f'{type(student).__name__}.')
        teacher = self.build_teacher(runner.logger)
        _check_class_counts(student, teacher)
        device = next(student.parameters()).device
        student.set_teacher(teacher.to(device))
        self.teacher = teacher

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        """Keep the teacher in eval mode whatever the runner did to the student."""
        if self.teacher is not None:
            self.teacher.eval()

    def build_teacher(self, logger=None) -> nn.Module:
        """Build the teacher, load and freeze its weights and return it in eval mode."""
        self._check_checkpoint_exists()
        teacher = MODELS.build(copy.deepcopy(self.model_cfg))
        state_dict, info = read_checkpoint(self.checkpoint, use_ema=self.use_ema)
        if is_official_layout(state_dict):
            state_dict = official_to_stl_mm(state_dict)
            info += ', converted from the official layout'
        teacher.load_state_dict(state_dict, strict=True)
        teacher.requires_grad_(False)
        teacher.eval()
        if logger is not None:
            num_params = sum(p.numel() for p in teacher.parameters())
            logger.info(f'FrozenTeacherHook: teacher {type(teacher).__name__} '
                        f'({num_params / 1e6:.2f}M frozen parameters) loaded from '
                        f'{self.checkpoint} ({info}).')
        return teacher

    def _check_checkpoint_exists(self) -> None:
        if '://' in self.checkpoint or osp.isfile(self.checkpoint):
            return
        match = _STAGE1_WORK_DIR.search(self.checkpoint.replace(osp.sep, '/'))
        stage1_config = (f'configs/stl/{match.group("config")}.py'
                         if match else 'configs/stl/fan_<size>_token_labeler.py')
        raise FileNotFoundError(
            f'FrozenTeacherHook: teacher checkpoint {self.checkpoint!r} not found. Either '
            f'train the token labeler first (stage 1): `python tools/train.py {stage1_config}` '
            'leaves its checkpoints in work_dirs/fan_<size>_token_labeler/; or convert an '
            'official STL teacher: `python tools/model_converters/fan_to_stl_mm.py SRC DST`. '
            'Then point the hook at the file; with the configs/stl student configs: '
            '`--cfg-options default_hooks.teacher.checkpoint=PATH`.')


def _check_class_counts(student: nn.Module, teacher: nn.Module) -> None:
    """Fail before training when both heads declare different class counts."""
    student_classes = getattr(getattr(student, 'head', None), 'num_classes', None)
    teacher_classes = getattr(getattr(teacher, 'head', None), 'num_classes', None)
    if None not in (student_classes, teacher_classes) and student_classes != teacher_classes:
        raise ValueError(
            f'Teacher and student class counts differ: the teacher predicts {teacher_classes} '
            f'classes, the student {student_classes}. Token labels need the same label '
            "space: set the teacher head's num_classes to the student's and load a teacher "
            'checkpoint trained on the same classes.')
