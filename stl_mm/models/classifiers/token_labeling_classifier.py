"""Image classifier for FAN baselines and both stages of Self-emerging Token Labeling."""
import inspect
from typing import Any, List, Optional, Tuple, Union

import torch
import torch.nn as nn
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from stl_mm.models.backbones.fan_checkpoint import (CheckpointMismatchError, describe_arch,
                                                    is_official_layout)
from stl_mm.models.heads import TokenLabelingHead
from stl_mm.registry import register
from stl_mm.utils import check_number
from .frozen_teacher import TEACHER_CONFIG_KEY, FrozenTeacher

MODES = ('plain', 'labeler', 'student')


def _file_being_loaded() -> Optional[str]:
    """The file mmengine is loading into a model, read from its caller's frame.

    mmengine hands a model only the weights (``load_state_dict``), not the file they came
    from; its two entry points, ``mmengine.runner.load_checkpoint`` (``get_model(pretrained=)``,
    the inferencers) and ``Runner.load_checkpoint`` (``load_from``), hold it as ``filename``.
    None when the load came another way.
    """
    from mmengine.runner import Runner
    from mmengine.runner import load_checkpoint as mmengine_load_checkpoint
    entry_points = {mmengine_load_checkpoint.__code__, Runner.load_checkpoint.__code__}
    frame = inspect.currentframe()
    while frame is not None:
        if frame.f_code in entry_points:
            return frame.f_locals.get('filename')
        frame = frame.f_back
    return None


def refuse_official_layout(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """``load_state_dict`` pre-hook: refuses official FAN / STL weights (timm key names).

    A loader that does not convert them (mmengine's, behind ``get_model(name,
    pretrained=FILE)``, the inferencers and ``load_from`` in mmpretrain's own tools) would load
    them non-strict into nothing (no ``backbone.`` prefix) and leave the model randomly
    initialised. Loading them correctly is not possible here: mmengine has already taken the
    file's ``state_dict`` (the raw weights of a timm file) and dropped ``state_dict_ema``, so
    the EMA rule of :func:`~stl_mm.models.backbones.fan_checkpoint.load_checkpoint` cannot be
    kept. That loader converts before it loads, so its loads pass this hook.

    Raises:
        CheckpointMismatchError: The weights under ``prefix`` are in the official layout; the
            message names the file (when mmengine loads it) and the two ways to load it.
    """
    own = {key[len(prefix):]: value for key, value in state_dict.items()
           if key.startswith(prefix)}
    if not own or not is_official_layout(own):
        return
    path = _file_being_loaded()
    source = path or 'The checkpoint being loaded (pretrained= / load_from=)'
    file = path or 'FILE'
    raise CheckpointMismatchError(
        f'{source} is an official FAN / STL checkpoint ({describe_arch(own)}; timm key names: '
        f'cls_token, patch_embed.*, blocks.*, no backbone. prefix), and the loader in use '
        f'(mmengine load_checkpoint) would leave {type(module).__name__} randomly initialised '
        'and would take the raw weights, not the EMA ones. Convert it: python '
        f'tools/model_converters/fan_to_stl_mm.py {file} OUT.pth and pass OUT.pth '
        "(get_model(..., pretrained='OUT.pth'), load_from='OUT.pth'), or load it with "
        f"stl_mm.models.backbones.fan_checkpoint.load_checkpoint(model, '{file}') (EMA weights "
        "first, strict); stl_mm's tools/train.py and tools/test.py load it as it is.")


@register(codebases=('mmpretrain', ))
class TokenLabelingClassifier(ImageClassifier):
    """FAN classifier with the training modes of STL.

    The head must be a :class:`~stl_mm.models.heads.TokenLabelingHead` (class logits
    from the class token, token logits (N, K, H, W) from the patch tokens).

    Modes (``mode``):

    - ``'plain'``: class loss only (FAN baselines).
    - ``'labeler'`` (STL stage 1): ``loss_cls = CE(cls_logits, y)`` and
      ``loss_token = labeler_weight * CE(mean over tokens of the token logits, y)``, both with
      the same (smoothed, possibly mixed) class target.
    - ``'student'`` (STL stage 2): ``loss_cls = CE(cls_logits, y)`` and ``loss_token`` =
      ``token_loss(student token logits, teacher token logits, batch_mix)`` where the teacher
      sees ``teacher_inputs`` (the clean teacher view). The teacher is attached with
      :meth:`set_teacher`, normally by :class:`~stl_mm.engine.hooks.FrozenTeacherHook`
      (``default_hooks.teacher`` in the student configs).

    Outputs, as mmpretrain's ``ImageClassifier`` gives them (what its Grad-CAM tool,
    ``FeatureExtractor`` and inferencers, FLOP counters and ONNX export expect):

    - ``forward(inputs)`` (``mode='tensor'``) returns one (N, K) tensor in every mode: the
      logits :meth:`predict` turns into scores (with ``eval_with_token_logits=True``, the
      official ``cls + 0.5 * max token`` variant).
    - ``extract_feat(inputs, stage='pre_logits')`` returns the (N, C) class-token features;
      ``stage='backbone'`` (or ``'neck'``) the backbone's ``((cls_feat, patch_map),)``.
    - :meth:`class_and_token_logits` returns ``(cls_logits (N, K), token_logits
      (N, K, H, W))``: the class-token logits and the per-token logits (needs the token head).

    Teacher protocol: a ``TokenLabelingClassifier`` with a token head, whose
    :meth:`class_and_token_logits` gives the token logits; or any other ``nn.Module`` where
    ``teacher(images)`` returns token logits (N, K, h, w), or a tuple whose last item is such
    a tensor. :class:`~.frozen_teacher.FrozenTeacher` holds it (frozen,
    in eval mode, outside this model's parameters, state dict, EMA copy and DDP) and runs it
    under ``torch.inference_mode`` and the surrounding autocast (AMP dtype when AMP is on); the
    loss casts its logits to float32.
    Its grid may differ from the student's (the loss resamples it); its class count may not.

    Checkpoints, ours or official FAN / STL ones, are loaded with
    :func:`~stl_mm.models.backbones.fan_checkpoint.load_checkpoint` (what ``tools/test.py``
    and ``load_from`` in ``tools/train.py`` use). Other loaders (mmengine's, behind
    ``get_model(pretrained=FILE)`` and mmpretrain's tools) get official-layout weights refused
    by :func:`refuse_official_layout`.

    Args:
        backbone: Backbone config, normally ``FAN`` with ``dense=False``.
        head: Head config, a ``TokenLabelingHead``.
        mode: ``'plain'``, ``'labeler'`` or ``'student'``. Defaults to ``'plain'``.
        labeler_weight: Weight alpha of the stage-1 token term, a finite number >= 0.
            Defaults to 1.
        token_loss: Config of the stage-2 token loss. Defaults to ``GumbelTokenLabelLoss``.
        eval_with_token_logits: Predict with the official ``cls + 0.5 * max over tokens``
            variant (sets the head's option). Defaults to False.
        train_cfg: Batch augments (Mixup / CutMix), as in mmpretrain.
        data_preprocessor: Data preprocessor config; stage 2 needs
            ``TokenLabelingDataPreprocessor`` (it provides ``teacher_inputs``).
        init_cfg: Initialisation config.
    """

    def __init__(self,
                 backbone: dict,
                 head: dict,
                 mode: str = 'plain',
                 labeler_weight: float = 1.0,
                 token_loss: Union[dict, nn.Module] = dict(type='GumbelTokenLabelLoss'),
                 eval_with_token_logits: bool = False,
                 train_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[Union[dict, nn.Module]] = None,
                 init_cfg: Optional[dict] = None) -> None:
        if mode not in MODES:
            raise ValueError(f'TokenLabelingClassifier: mode must be one of {MODES}, '
                             f'got {mode!r}.')
        labeler_weight = check_number('labeler_weight', labeler_weight)
        # The head's in_channels is the backbone's width (filled in, or checked when given).
        backbone = backbone if isinstance(backbone, nn.Module) else MODELS.build(backbone)
        head = TokenLabelingHead.fit_to_backbone(head, backbone)
        super().__init__(
            backbone=backbone,
            head=head,
            train_cfg=train_cfg,
            data_preprocessor=data_preprocessor,
            init_cfg=init_cfg)
        with_token_head = getattr(self.head, 'with_token_head', None)
        if with_token_head is None:
            raise TypeError('TokenLabelingClassifier needs a TokenLabelingHead, got '
                            f'{type(self.head).__name__}.')
        if mode != 'plain' and not with_token_head:
            raise ValueError(f'TokenLabelingClassifier: mode={mode!r} trains the token head; '
                             'set with_token_head=True in the head config.')
        if eval_with_token_logits:
            if not with_token_head:
                raise ValueError('TokenLabelingClassifier: eval_with_token_logits=True needs '
                                 'the token head; set with_token_head=True in the head config.')
            self.head.eval_with_token_logits = True
        self.stl_mode = mode
        self.labeler_weight = labeler_weight
        self.token_loss = token_loss if isinstance(token_loss, nn.Module) else MODELS.build(
            token_loss)
        self.frozen_teacher: Optional[FrozenTeacher] = None
        self.register_load_state_dict_pre_hook(refuse_official_layout)

    @property
    def teacher(self) -> Optional[nn.Module]:
        """The frozen teacher model, or None before :meth:`set_teacher`."""
        return None if self.frozen_teacher is None else self.frozen_teacher.module

    def set_teacher(self, teacher: Union[nn.Module, FrozenTeacher]) -> None:
        """Attach the teacher for ``mode='student'``, outside the module tree.

        A plain module is wrapped in a :class:`FrozenTeacher` (frozen, eval mode); device
        placement is the caller's (:class:`FrozenTeacherHook` moves it to the student's).
        """
        self.frozen_teacher = teacher if isinstance(teacher, FrozenTeacher) else FrozenTeacher(
            teacher)

    def forward(self,
                inputs: torch.Tensor,
                data_samples: Optional[List[DataSample]] = None,
                mode: str = 'tensor',
                teacher_inputs: Optional[torch.Tensor] = None,
                batch_mix: Optional[Any] = None):
        """Run in ``'tensor'``, ``'loss'`` or ``'predict'`` mode.

        Args:
            inputs: Student images (N, 3, H, W).
            data_samples: Annotations (``gt_label`` or, after Mixup / CutMix, ``gt_score``).
            mode: ``'tensor'`` (the (N, K) prediction logits, see the class docstring),
                ``'loss'`` (a dict of losses) or ``'predict'`` (data samples with scores).
            teacher_inputs: Teacher view of the same images (stage 2 only).
            batch_mix: ``BatchMixRecord`` of the student batch, or None (stage 2 only).
        """
        if mode == 'tensor':
            return self.head.prediction_logits(self.extract_feat(inputs))
        if mode == 'loss':
            return self.loss(inputs, data_samples, teacher_inputs, batch_mix)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        raise RuntimeError(f'Invalid mode "{mode}": use "tensor", "loss" or "predict".')

    def class_and_token_logits(self,
                               inputs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Class logits (N, K) of the class token and token logits (N, K, H, W) of the patches.

        The class logits are the class head's alone (no ``eval_with_token_logits`` mixing);
        the token logits are what a token labeler gives a STL student.

        Raises:
            ValueError: The head has no token head (``with_token_head=False``).
        """
        if not self.head.with_token_head:
            raise ValueError(
                'TokenLabelingClassifier.class_and_token_logits: this model has no token head '
                '(with_token_head=False), so it gives no token logits; set with_token_head=True '
                f'in its head config (for a teacher: {TEACHER_CONFIG_KEY}.model.head) and load a '
                'checkpoint trained with it (a token labeler).')
        return self.head(self.extract_feat(inputs))

    def loss(self,
             inputs: torch.Tensor,
             data_samples: List[DataSample],
             teacher_inputs: Optional[torch.Tensor] = None,
             batch_mix: Optional[Any] = None) -> dict:
        """Losses of the configured mode: ``loss_cls`` and, except in plain mode,
        ``loss_token``."""
        cls_logits, token_logits = self.head(self.extract_feat(inputs))
        losses = dict(loss_cls=self.head.class_loss(cls_logits, data_samples))
        if self.head.cal_acc:
            losses.update(self.head.accuracy(cls_logits, data_samples))
        if self.stl_mode == 'labeler':
            mean_token_logits = token_logits.mean(dim=(2, 3))
            losses['loss_token'] = self.labeler_weight * self.head.class_loss(
                mean_token_logits, data_samples)
        elif self.stl_mode == 'student':
            teacher_logits = self.teacher_token_logits(teacher_inputs)
            losses['loss_token'] = self.token_loss(token_logits, teacher_logits, batch_mix)
        return losses

    def teacher_token_logits(self, teacher_inputs: Optional[torch.Tensor]) -> torch.Tensor:
        """Token logits (N, K, h, w) of the frozen teacher, without gradients."""
        if self.frozen_teacher is None:
            raise RuntimeError(
                "TokenLabelingClassifier(mode='student') has no teacher. Set "
                f"{TEACHER_CONFIG_KEY}=dict(type='FrozenTeacherHook', model=<teacher config>, "
                "checkpoint=<teacher .pth>) in the config, as configs/stl/*_student.py do "
                '(FrozenTeacherHook builds, loads and attaches it), or call '
                'set_teacher(model) yourself.')
        if teacher_inputs is None:
            raise ValueError(
                "TokenLabelingClassifier(mode='student') needs teacher_inputs (the clean "
                "teacher view): use the DualView transform with data_preprocessor="
                "dict(type='TokenLabelingDataPreprocessor', ...).")
        return self.frozen_teacher.token_logits(teacher_inputs)
