"""What Mixup / CutMix did to a student batch, and the same mixing applied to token labels.

mmpretrain's :class:`~mmpretrain.models.utils.batch_augments.Mixup` and
:class:`~mmpretrain.models.utils.batch_augments.CutMix` mix images and class targets but keep
no trace of ``lam``, the partner permutation or the CutMix box. :class:`RecordingMixup` and
:class:`RecordingCutMix` behave exactly like them (same random draws in the same order) and
also leave a :class:`BatchMixRecord` in ``last_record``.
:class:`~stl_mm.models.utils.TokenLabelingDataPreprocessor` swaps them in for the standard
``Mixup`` / ``CutMix`` configs, so configs keep the usual names.

:func:`mix_token_targets` is the ``token_label_mix='aligned'`` option of
:class:`~stl_mm.models.losses.GumbelTokenLabelLoss` (our extension; the paper and the
official code take token labels from the unmixed teacher view and do not mix them).
"""
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch
from mmpretrain.models.utils.batch_augments import CutMix, Mixup

from stl_mm.registry import register

MIX_KINDS = ('mixup', 'cutmix')


@dataclass(frozen=True)
class BatchMixRecord:
    """Parameters of one Mixup or CutMix call on a batch.

    Mixed sample ``i`` is ``lam * x[i] + (1 - lam) * x[index[i]]`` (Mixup) or ``x[i]`` with
    ``x[index[i]]`` pasted into ``box`` (CutMix); class targets are mixed with ``lam``.

    Args:
        kind: ``'mixup'`` or ``'cutmix'``.
        lam: Weight of each sample's own target. For CutMix it is the lambda the class
            targets were mixed with: ``1 - box area / image area`` when mmpretrain's
            ``correct_lam`` is on (its default), else the Beta draw.
        index: (N,) long tensor, the partner of each sample.
        box: CutMix box ``(y1, y2, x1, x2)`` in input pixels (half-open: rows ``y1:y2``,
            columns ``x1:x2``); None for Mixup.
        input_size: (H, W) of the mixed input batch.
    """

    kind: str
    lam: float
    index: torch.Tensor
    box: Optional[Tuple[int, int, int, int]]
    input_size: Tuple[int, int]

    def __post_init__(self) -> None:
        if self.kind not in MIX_KINDS:
            raise ValueError(f'BatchMixRecord: kind must be one of {MIX_KINDS}, got '
                             f'{self.kind!r}.')
        if not 0. <= self.lam <= 1.:
            raise ValueError(f'BatchMixRecord: lam must lie in [0, 1], got {self.lam}.')
        if self.index.ndim != 1 or self.index.dtype != torch.long:
            raise ValueError('BatchMixRecord: index must be a 1-D long tensor (the partner of '
                             f'each sample), got {self.index.dtype} of shape '
                             f'{tuple(self.index.shape)}.')
        if (self.kind == 'cutmix') != (self.box is not None):
            raise ValueError('BatchMixRecord: a CutMix record needs its box (y1, y2, x1, x2) '
                             f'and a Mixup record has none; got kind={self.kind!r}, '
                             f'box={self.box}.')
        if len(self.input_size) != 2:
            raise ValueError(f'BatchMixRecord: input_size must be (H, W), got '
                             f'{self.input_size}.')


def mix_token_targets(targets: torch.Tensor, record: BatchMixRecord) -> torch.Tensor:
    """Mix per-token targets the way ``record`` mixed the images they belong to.

    - Mixup: ``lam * targets + (1 - lam) * targets[index]``.
    - CutMix: the box is mapped from input pixels onto the token grid, token ``(i, j)``
      covering the input rectangle ``[i * H / h, (i + 1) * H / h) x [j * W / w, (j + 1) * W / w)``.
      Each token takes its partner's target with weight ``c``, the fraction of its rectangle
      that lies inside the box: tokens fully inside get exactly the partner's target, tokens
      fully outside keep their own, and tokens the box edge cuts through get the
      area-weighted blend ``(1 - c) * own + c * partner``. Averaged over the grid the
      partner weight is ``box area / (H * W)``, i.e. exactly ``1 - lam`` of the class
      target under mmpretrain's default ``correct_lam=True``.

    Args:
        targets: (N, K, h, w) float per-token targets (probabilities over K classes) of the
            unmixed images, on the student's token grid.
        record: What Mixup / CutMix did to the student batch.

    Returns:
        (N, K, h, w) mixed targets.
    """
    if targets.ndim != 4 or not targets.is_floating_point():
        raise ValueError('mix_token_targets: targets must be a float tensor (N, K, h, w) of '
                         f'per-token class probabilities, got {targets.dtype} of shape '
                         f'{tuple(targets.shape)}.')
    if record.index.numel() != targets.size(0):
        raise ValueError(f'mix_token_targets: the record mixes {record.index.numel()} '
                         f'samples but targets hold {targets.size(0)}; pass the record of '
                         'this very batch.')
    partner = targets[record.index.to(targets.device)]
    if record.kind == 'mixup':
        return record.lam * targets + (1. - record.lam) * partner
    coverage = box_coverage(record.box, record.input_size, targets.shape[-2:])
    coverage = coverage.to(device=targets.device, dtype=targets.dtype)
    return targets + coverage * (partner - targets)


def box_coverage(box: Tuple[int, int, int, int], input_size: Tuple[int, int],
                 grid_size: Tuple[int, int]) -> torch.Tensor:
    """Fraction of each token's input rectangle that lies inside a pixel box.

    Args:
        box: ``(y1, y2, x1, x2)`` in input pixels, half-open.
        input_size: (H, W) of the input the box refers to.
        grid_size: (h, w) of the token grid spread evenly over that input.

    Returns:
        (h, w) float64 tensor with values in [0, 1].
    """
    y1, y2, x1, x2 = box
    rows = _interval_coverage(y1, y2, input_size[0], grid_size[0])
    cols = _interval_coverage(x1, x2, input_size[1], grid_size[1])
    return rows[:, None] * cols[None, :]


def _interval_coverage(start: float, end: float, length: int, cells: int) -> torch.Tensor:
    """Fraction of each of ``cells`` equal cells of ``[0, length)`` inside ``[start, end)``."""
    edges = torch.linspace(0., float(length), cells + 1, dtype=torch.float64)
    overlap = torch.minimum(edges[1:], torch.tensor(float(end), dtype=torch.float64)) - \
        torch.maximum(edges[:-1], torch.tensor(float(start), dtype=torch.float64))
    return overlap.clamp(min=0.) / (length / cells)


@register('BATCH_AUGMENTS', codebases=('mmpretrain', ))
class RecordingMixup(Mixup):
    """mmpretrain ``Mixup`` that keeps a :class:`BatchMixRecord` of its last call.

    The random draws (``lam``, then the permutation) happen in the same order as in
    mmpretrain, so a seed gives the same batch with either class.
    """

    last_record: Optional[BatchMixRecord] = None

    @classmethod
    def from_augment(cls, augment: Mixup) -> 'RecordingMixup':
        """The recording twin of a built mmpretrain ``Mixup``."""
        return cls(alpha=augment.alpha)

    def mix(self, batch_inputs: torch.Tensor,
            batch_scores: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Mix inputs and one-hot scores as mmpretrain does and record the parameters."""
        lam = np.random.beta(self.alpha, self.alpha)
        index = torch.randperm(batch_inputs.size(0))
        mixed_inputs = lam * batch_inputs + (1 - lam) * batch_inputs[index, :]
        mixed_scores = lam * batch_scores + (1 - lam) * batch_scores[index, :]
        self.last_record = BatchMixRecord(
            kind='mixup',
            lam=float(lam),
            index=index.to(batch_inputs.device),
            box=None,
            input_size=tuple(batch_inputs.shape[-2:]))
        return mixed_inputs, mixed_scores


@register('BATCH_AUGMENTS', codebases=('mmpretrain', ))
class RecordingCutMix(CutMix):
    """mmpretrain ``CutMix`` that keeps a :class:`BatchMixRecord` of its last call.

    The random draws (``lam``, permutation, box) happen in the same order as in mmpretrain,
    so a seed gives the same batch with either class.
    """

    last_record: Optional[BatchMixRecord] = None

    @classmethod
    def from_augment(cls, augment: CutMix) -> 'RecordingCutMix':
        """The recording twin of a built mmpretrain ``CutMix``."""
        return cls(
            alpha=augment.alpha,
            cutmix_minmax=augment.cutmix_minmax,
            correct_lam=augment.correct_lam)

    def mix(self, batch_inputs: torch.Tensor,
            batch_scores: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Paste boxes and mix one-hot scores as mmpretrain does and record the parameters."""
        lam = np.random.beta(self.alpha, self.alpha)
        index = torch.randperm(batch_inputs.size(0))
        input_size = tuple(batch_inputs.shape[-2:])
        (y1, y2, x1, x2), lam = self.cutmix_bbox_and_lam(input_size, lam)
        batch_inputs[:, :, y1:y2, x1:x2] = batch_inputs[index, :, y1:y2, x1:x2]
        mixed_scores = lam * batch_scores + (1 - lam) * batch_scores[index, :]
        self.last_record = BatchMixRecord(
            kind='cutmix',
            lam=float(lam),
            index=index.to(batch_inputs.device),
            box=(int(y1), int(y2), int(x1), int(x2)),
            input_size=input_size)
        return batch_inputs, mixed_scores
