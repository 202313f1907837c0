"""Image classifier for FAN baselines and both stages of Self-emerging Token Labeling."""
from typing import Any, List, Optional, Union

import torch
import torch.nn as nn
from mmengine.logging import MMLogger
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from stl_mm.models.backbones.fan_checkpoint import is_official_layout, official_to_stl_mm
from stl_mm.registry import register

MODES = ('plain', 'labeler', 'student')


class _TeacherHolder:
    """Keeps the frozen teacher out of the student's module tree.

    Held in a plain attribute, the teacher is not a child module: it is not in
    ``parameters()`` / ``state_dict()`` (so not in the optimizer or the saved checkpoint),
    not moved by ``.to()``, and not seen by DDP. ``deepcopy`` of the student (mmengine's
    EMA copies the model) shares the teacher instead of copying it.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __deepcopy__(self, memo: dict) -> '_TeacherHolder':
        return self


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
      :meth:`set_teacher`, normally by :class:`~stl_mm.engine.hooks.FrozenTeacherHook`.

    Teacher protocol: any ``nn.Module`` where ``teacher(images)`` returns token logits
    (N, K, h, w), or a tuple whose last item is such a tensor. A
    ``TokenLabelingClassifier`` qualifies: its ``forward(images)`` (``mode='tensor'``) returns
    ``(cls_logits, token_logits)``. The teacher runs under ``torch.inference_mode``, in eval
    mode, under the surrounding autocast (AMP dtype when AMP is on); the loss casts its logits
    to float32.
    Its grid may differ from the student's (the loss resamples it); its class count may not.

    Official FAN / STL checkpoints (top-level keys ``cls_token``, ``blocks.*``, ``head.*``,
    ``aux_head.*``...) are converted on load, so ``load_from='official.pth'`` works.

    Args:
        backbone: Backbone config, normally ``FAN`` with ``dense=False``.
        head: Head config, a ``TokenLabelingHead``.
        mode: ``'plain'``, ``'labeler'`` or ``'student'``. Defaults to ``'plain'``.
        labeler_weight: Weight alpha of the stage-1 token term. Defaults to 1.
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
        self._teacher_holder: Optional[_TeacherHolder] = None
        self.register_load_state_dict_pre_hook(_convert_official_checkpoint)

    @property
    def teacher(self) -> Optional[nn.Module]:
        """The frozen teacher, or None before :meth:`set_teacher`."""
        return None if self._teacher_holder is None else self._teacher_holder.model

    def set_teacher(self, teacher: nn.Module) -> None:
        """Attach a frozen teacher for ``mode='student'``, outside the module tree.

        The teacher is switched to eval mode and stays there (see :meth:`train`). Freezing
        and device placement are the caller's job (:class:`FrozenTeacherHook` does both).
        """
        if not isinstance(teacher, nn.Module):
            raise TypeError(f'set_teacher expects an nn.Module, got {type(teacher).__name__}.')
        self._teacher_holder = _TeacherHolder(teacher.eval())

    def train(self, mode: bool = True) -> 'TokenLabelingClassifier':
        """Set the student's mode; the teacher always stays in eval mode."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def forward(self,
                inputs: torch.Tensor,
                data_samples: Optional[List[DataSample]] = None,
                mode: str = 'tensor',
                teacher_inputs: Optional[torch.Tensor] = None,
                batch_mix: Optional[Any] = None):
        """Run in ``'tensor'`` (returns ``(cls_logits, token_logits)``), ``'loss'`` or
        ``'predict'`` mode.

        Args:
            inputs: Student images (N, 3, H, W).
            data_samples: Annotations (``gt_label`` or, after Mixup / CutMix, ``gt_score``).
            mode: ``'tensor'``, ``'loss'`` or ``'predict'``.
            teacher_inputs: Teacher view of the same images (stage 2 only).
            batch_mix: ``BatchMixRecord`` of the student batch, or None (stage 2 only).
        """
        if mode == 'tensor':
            return self.head(self.extract_feat(inputs))
        if mode == 'loss':
            return self.loss(inputs, data_samples, teacher_inputs, batch_mix)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        raise RuntimeError(f'Invalid mode "{mode}": use "tensor", "loss" or "predict".')

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
        if self.teacher is None:
            raise RuntimeError(
                "TokenLabelingClassifier(mode='student') has no teacher. Add "
                "custom_hooks=[dict(type='FrozenTeacherHook', model=<teacher config>, "
                "checkpoint=<teacher .pth>)] to the config (FrozenTeacherHook builds, loads "
                'and attaches it), or call set_teacher(model) yourself.')
        if teacher_inputs is None:
            raise ValueError(
                "TokenLabelingClassifier(mode='student') needs teacher_inputs (the clean "
                "teacher view): use the DualView transform with data_preprocessor="
                "dict(type='TokenLabelingDataPreprocessor', ...).")
        # Inference mode skips autograd bookkeeping entirely (cheaper than no_grad); autocast
        # stays as the caller set it, so under AMP the teacher runs in the AMP dtype.
        with torch.inference_mode():
            output = self.teacher(teacher_inputs)
        token_logits = output[-1] if isinstance(output, (tuple, list)) else output
        if not isinstance(token_logits, torch.Tensor) or token_logits.dim() != 4:
            shape = tuple(token_logits.shape) if isinstance(token_logits, torch.Tensor) else (
                type(token_logits).__name__)
            raise TypeError(
                'The teacher must return token logits (N, K, h, w), or a tuple ending with '
                f'them; got {shape}. For a TokenLabelingClassifier teacher, set '
                'with_token_head=True in its head.')
        return token_logits


def _convert_official_checkpoint(module: nn.Module, state_dict: dict, prefix: str,
                                 *args: Any) -> None:
    """Load-state-dict pre-hook: convert an official FAN / STL state dict in place."""
    own_keys = [key for key in state_dict if key.startswith(prefix)]
    if not own_keys or not is_official_layout({key[len(prefix):]: None for key in own_keys}):
        return
    official = {key[len(prefix):]: state_dict.pop(key) for key in own_keys}
    for key, value in official_to_stl_mm(official).items():
        state_dict[prefix + key] = value
    MMLogger.get_current_instance().info(
        f'{type(module).__name__}: converted an official FAN/STL state dict '
        f'({len(official)} tensors) to the stl_mm layout.')
