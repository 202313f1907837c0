"""Dense token-label loss of Self-emerging Token Labeling (STL, stage 2).

A frozen teacher gives per-token class logits; this loss turns them into one target
distribution per student token and averages the soft cross-entropy over all tokens.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import MMLogger

from stl_mm.registry import register
from stl_mm.utils import check_number

TARGET_MODES = ('gumbel', 'argmax', 'softmax')
TOKEN_LABEL_MIXES = ('none', 'aligned')


@register(codebases=('mmpretrain', ))
class GumbelTokenLabelLoss(nn.Module):
    """Soft cross-entropy between student token logits and teacher token labels.

    Targets are made from the teacher's per-token logits in four steps, all in float32
    (also under AMP, where the teacher may return float16 / bfloat16 logits):

    1. **Resample**: when the teacher grid (h, w) differs from the student grid (H, W)
       (different input size or patch stride), the teacher logits are resized to (H, W)
       bilinearly. This is logged once.
    2. **Label**: ``mode='gumbel'`` draws a hard Gumbel-softmax sample per token
       (a token whose top class has probability p keeps that label with frequency p; the
       hard sample does not depend on the temperature ``tau``), ``'argmax'`` takes the most
       likely class, ``'softmax'`` keeps the teacher distribution. The Gumbel noise is
       drawn on the logits laid out as (N, h, w, K) (token-major, the official
       (N, tokens, K) layout), so a given seed gives the same labels as the official code.
    3. **Smooth**: hard labels become ``(1 - eps) * one_hot + eps / K`` with ``K`` the real
       number of classes (the official code always uses 1000). Soft ``'softmax'`` targets
       are used as they are, as in the official code.
    4. **Mix** (optional, ``token_label_mix='aligned'``): when the student batch went through
       Mixup / CutMix, the same mix is applied to the token targets
       (:func:`stl_mm.models.utils.mix_token_targets`): CutMix pastes the partner's
       token labels inside the box, Mixup blends them with lambda. The default ``'none'``
       keeps the labels of the clean teacher view, as in the paper.

    The loss is ``loss_weight * mean over batch and tokens of -sum_k target_k *
    log_softmax(student)_k``. Hard, unmixed targets take a fused path:
    ``F.cross_entropy(..., label_smoothing=eps)`` on the token labels, the same function
    without the dense (N, K, H, W) targets.

    Args:
        mode: How teacher logits become targets: ``'gumbel'``, ``'argmax'`` or
            ``'softmax'``. Defaults to ``'gumbel'``.
        tau: Gumbel-softmax temperature (``mode='gumbel'`` only; kept for the official
            option set, a hard sample is the same for every ``tau``); > 0. Defaults to 1.
        label_smoothing: Smoothing ``eps`` of hard targets, in [0, 1). Defaults to 0.1.
        loss_weight: Weight ``beta`` of the dense loss, >= 0. Defaults to 1.
        token_label_mix: ``'none'`` or ``'aligned'`` (see above). Defaults to ``'none'``.
    """

    def __init__(self,
                 mode: str = 'gumbel',
                 tau: float = 1.0,
                 label_smoothing: float = 0.1,
                 loss_weight: float = 1.0,
                 token_label_mix: str = 'none') -> None:
        super().__init__()
        if mode not in TARGET_MODES:
            raise ValueError(f'GumbelTokenLabelLoss: mode must be one of {TARGET_MODES}, '
                             f'got {mode!r}.')
        if token_label_mix not in TOKEN_LABEL_MIXES:
            raise ValueError('GumbelTokenLabelLoss: token_label_mix must be one of '
                             f'{TOKEN_LABEL_MIXES}, got {token_label_mix!r}.')
        # The student configs set these as model.token_loss.<option>.
        self.tau = check_number('token_loss.tau', tau, positive=True)
        self.label_smoothing = check_number('token_loss.label_smoothing', label_smoothing,
                                            below=1.0)
        self.loss_weight = check_number('token_loss.loss_weight', loss_weight)
        self.mode = mode
        self.token_label_mix = token_label_mix
        self._resize_logged = False

    def forward(self,
                student_logits: torch.Tensor,
                teacher_logits: torch.Tensor,
                batch_mix: Optional[object] = None) -> torch.Tensor:
        """Compute the dense loss.

        Args:
            student_logits: Student token logits (N, K, H, W).
            teacher_logits: Teacher token logits (N, K, h, w), any float dtype.
            batch_mix: The ``BatchMixRecord`` of the student batch, or None when no
                Mixup / CutMix was applied. Used only with ``token_label_mix='aligned'``.

        Returns:
            The weighted scalar loss (float32).
        """
        self.check_compatible(student_logits, teacher_logits)
        grid_size = student_logits.shape[-2:]
        # Autocast would run log_softmax in half precision; the loss is cheap, keep it exact.
        with torch.autocast(device_type=student_logits.device.type, enabled=False):
            if self.mode == 'softmax' or (self.token_label_mix == 'aligned'
                                          and batch_mix is not None):
                targets = self.make_targets(teacher_logits, grid_size, batch_mix)
                log_probs = F.log_softmax(student_logits.float(), dim=1)
                loss = -(targets * log_probs).sum(dim=1).mean()
            else:
                # Hard labels: cross-entropy with label smoothing is the soft cross-entropy
                # against (1 - eps) * one_hot + eps / K, without building the dense targets.
                labels = self.token_labels(teacher_logits, grid_size)
                num_classes = student_logits.shape[1]
                student_tokens = student_logits.permute(0, 2, 3, 1).reshape(-1, num_classes)
                loss = F.cross_entropy(
                    student_tokens.float(),
                    labels.flatten(),
                    label_smoothing=self.label_smoothing)
            return self.loss_weight * loss

    @torch.no_grad()
    def token_labels(self, teacher_logits: torch.Tensor,
                     grid_size: Tuple[int, int]) -> torch.Tensor:
        """Hard token labels (N, H, W) of ``mode='gumbel'`` or ``'argmax'``.

        A hard Gumbel-softmax sample is the argmax of ``logits + g`` with Gumbel noise ``g``
        (dividing by ``tau`` does not move the argmax). The noise is drawn exactly as
        ``F.gumbel_softmax`` draws it, so a seed gives the same labels as the official code.

        Args:
            teacher_logits: Teacher token logits (N, K, h, w).
            grid_size: The student token grid (H, W).
        """
        if self.mode == 'softmax':
            raise ValueError("GumbelTokenLabelLoss: mode='softmax' has soft targets, not hard "
                             'labels; use make_targets().')
        token_major = self._token_major_logits(teacher_logits, grid_size)
        if self.mode == 'gumbel':
            gumbel_noise = -torch.empty_like(token_major).exponential_().log()
            token_major = token_major + gumbel_noise
        return token_major.argmax(dim=-1)

    @torch.no_grad()
    def make_targets(self,
                     teacher_logits: torch.Tensor,
                     grid_size: Tuple[int, int],
                     batch_mix: Optional[object] = None) -> torch.Tensor:
        """Turn teacher token logits into dense student token targets.

        Args:
            teacher_logits: Teacher token logits (N, K, h, w).
            grid_size: The student token grid (H, W).
            batch_mix: See :meth:`forward`.

        Returns:
            float32 targets (N, K, H, W); each token's target sums to 1.
        """
        if self.mode == 'softmax':
            targets = self._token_major_logits(teacher_logits, grid_size).softmax(dim=-1)
        else:
            num_classes = teacher_logits.shape[1]
            hard = F.one_hot(self.token_labels(teacher_logits, grid_size), num_classes).float()
            targets = (1 - self.label_smoothing) * hard + self.label_smoothing / num_classes
        targets = targets.permute(0, 3, 1, 2)

        if self.token_label_mix == 'aligned' and batch_mix is not None:
            from stl_mm.models.utils import mix_token_targets
            targets = mix_token_targets(targets, batch_mix)
        return targets

    def _token_major_logits(self, teacher_logits: torch.Tensor,
                            grid_size: Tuple[int, int]) -> torch.Tensor:
        """float32 teacher logits on the student grid, laid out (N, H, W, K).

        Token-major is the official (N, tokens, K) order, in which the Gumbel noise is drawn.
        """
        if teacher_logits.dim() != 4:
            raise ValueError('GumbelTokenLabelLoss: teacher token logits must be (N, K, h, w), '
                             f'got shape {tuple(teacher_logits.shape)}.')
        logits = teacher_logits.detach().float()
        grid_size = tuple(int(s) for s in grid_size)
        if tuple(logits.shape[-2:]) != grid_size:
            self._log_resize_once(tuple(logits.shape[-2:]), grid_size)
            logits = F.interpolate(logits, size=grid_size, mode='bilinear', align_corners=False)
        return logits.permute(0, 2, 3, 1).contiguous()

    def check_compatible(self, student_logits: torch.Tensor,
                         teacher_logits: torch.Tensor) -> None:
        """Raise a clear error when teacher and student token logits cannot be paired.

        Args:
            student_logits: Student token logits (N, K, H, W).
            teacher_logits: Teacher token logits (N, K', h, w).
        """
        if student_logits.dim() != 4 or teacher_logits.dim() != 4:
            raise ValueError(
                'GumbelTokenLabelLoss: token logits must be (N, K, H, W); got student '
                f'{tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)}.')
        if student_logits.shape[1] != teacher_logits.shape[1]:
            raise ValueError(
                f'Teacher and student class counts differ: the teacher predicts '
                f'{teacher_logits.shape[1]} classes, the student {student_logits.shape[1]}. '
                'Token labels need the same label space: set the teacher head\'s num_classes '
                'to the student\'s and load a teacher checkpoint trained on the same classes.')
        if student_logits.shape[0] != teacher_logits.shape[0]:
            raise ValueError(
                f'Teacher and student batch sizes differ ({teacher_logits.shape[0]} vs '
                f'{student_logits.shape[0]}): both views must come from the same images.')

    def _log_resize_once(self, teacher_grid: Tuple[int, int],
                         student_grid: Tuple[int, int]) -> None:
        if not self._resize_logged:
            MMLogger.get_current_instance().info(
                f'Token labels: resampling teacher token logits from a {teacher_grid[0]}x'
                f'{teacher_grid[1]} grid to the student grid {student_grid[0]}x'
                f'{student_grid[1]} (bilinear).')
            self._resize_logged = True

    def extra_repr(self) -> str:
        return (f'mode={self.mode!r}, tau={self.tau}, label_smoothing={self.label_smoothing}, '
                f'loss_weight={self.loss_weight}, token_label_mix={self.token_label_mix!r}')
