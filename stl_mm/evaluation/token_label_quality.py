"""How well a token labeler's token labels segment the object (STL paper, Fig. 2).

A token labeler (STL stage 1) predicts class logits for every patch token. Its token labels are
good when the tokens it labels as the image's class are the object's tokens. Given a
ground-truth foreground mask per image, this module measures, pooled over all tokens of a set of
images:

- **precision**: of the tokens labelled as the image's class, the fraction on the foreground;
- **recall**: of the foreground tokens, the fraction labelled as the image's class;
- **IoU**: intersection over union of those two token sets;
- **confidence of correct vs wrong foreground labels**: the mean teacher probability of the
  label a foreground token received, over tokens labelled with the image's class (correct) and
  over tokens labelled with another class (wrong). The paper's claim (Fig. 2(e)) is that wrong
  labels come with low confidence, which is what lets Gumbel-softmax selection prefer the
  correct ones.

Labels are either the teacher's argmax or hard Gumbel-softmax samples, drawn exactly as the
stage-2 loss draws them (:class:`~stl_mm.models.losses.GumbelTokenLabelLoss`); Gumbel figures
are averaged over several seeded draws.

Ground-truth foreground comes from images whose object sits on a dark background (for example
Fashion-MNIST): a pixel is foreground when its brightest channel is above
:data:`FOREGROUND_PIXEL_THRESHOLD`, and a token is foreground when more than
:data:`FOREGROUND_TOKEN_FRACTION` of its pixels are.
"""
from dataclasses import asdict, dataclass, fields
from typing import Dict, Iterable, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    'FOREGROUND_PIXEL_THRESHOLD', 'FOREGROUND_TOKEN_FRACTION', 'LABEL_MODES', 'TokenLabelCounts',
    'foreground_pixels', 'foreground_tokens', 'token_labels', 'count_token_labels',
    'token_label_quality'
]

#: A pixel (0..255) is foreground above this value: Fashion-MNIST's background is exactly 0 for
#: about half the pixels; 10 (about 4% of full scale) keeps dark garment parts as foreground
#: while the faint halo left by resizing stays background.
FOREGROUND_PIXEL_THRESHOLD = 10.
#: A token is foreground when more than this fraction of its pixels are ("most of its pixels").
FOREGROUND_TOKEN_FRACTION = 0.5
LABEL_MODES = ('argmax', 'gumbel')


def foreground_pixels(images: torch.Tensor,
                      threshold: float = FOREGROUND_PIXEL_THRESHOLD) -> torch.Tensor:
    """Foreground pixel mask of images on a dark background.

    Args:
        images: Un-normalised images in 0..255, (N, C, H, W) or (N, H, W), any dtype.
        threshold: A pixel is foreground when its brightest channel exceeds this value.

    Returns:
        Bool mask (N, H, W).
    """
    if images.dim() == 3:
        images = images[:, None]
    if images.dim() != 4:
        raise ValueError('foreground_pixels expects images (N, C, H, W) or (N, H, W), got shape '
                         f'{tuple(images.shape)}.')
    return images.float().amax(dim=1) > threshold


def foreground_tokens(pixel_mask: torch.Tensor,
                      grid_size: Tuple[int, int],
                      min_fraction: float = FOREGROUND_TOKEN_FRACTION) -> torch.Tensor:
    """Token-level foreground: tokens where more than ``min_fraction`` of pixels are foreground.

    Args:
        pixel_mask: Bool foreground mask (N, H, W).
        grid_size: Token grid (h, w). When H, W are not multiples of h, w, each token covers
            the pixels adaptive average pooling assigns to it.
        min_fraction: Fraction of foreground pixels above which a token is foreground.

    Returns:
        Bool mask (N, h, w).
    """
    if pixel_mask.dim() != 3:
        raise ValueError('foreground_tokens expects a pixel mask (N, H, W), got shape '
                         f'{tuple(pixel_mask.shape)}.')
    fractions = F.adaptive_avg_pool2d(pixel_mask[:, None].float(), tuple(grid_size))[:, 0]
    return fractions > min_fraction


def token_labels(token_logits: torch.Tensor,
                 mode: str = 'argmax',
                 tau: float = 1.0,
                 seed: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Hard token labels and the teacher's confidence in them.

    Args:
        token_logits: Teacher token logits (N, K, h, w).
        mode: ``'argmax'`` (most likely class) or ``'gumbel'`` (one hard Gumbel-softmax draw per
            token, as the stage-2 loss draws it).
        tau: Gumbel-softmax temperature.
        seed: Seed of the Gumbel draw (the global torch random state is left untouched); None
            draws from the current global state.

    Returns:
        labels (N, h, w) long and confidences (N, h, w) float: the teacher's softmax probability
        of each token's label.
    """
    if mode not in LABEL_MODES:
        raise ValueError(f'token_labels: mode must be one of {LABEL_MODES}, got {mode!r}.')
    if token_logits.dim() != 4:
        raise ValueError('token_labels expects token logits (N, K, h, w), got shape '
                         f'{tuple(token_logits.shape)}.')
    logits = token_logits.detach().float()
    if mode == 'argmax':
        labels = logits.argmax(dim=1)
    else:
        from stl_mm.models.losses import GumbelTokenLabelLoss
        sampler = GumbelTokenLabelLoss(mode='gumbel', tau=tau, label_smoothing=0.)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            labels = sampler.token_labels(logits, logits.shape[-2:])
    confidences = logits.softmax(dim=1).gather(1, labels[:, None])[:, 0]
    return labels, confidences


@dataclass
class TokenLabelCounts:
    """Token counts (and confidence sums) behind the token-label quality figures.

    "Labelled" means labelled as the image's class. Counts add up over batches with ``+``.
    """

    labelled_foreground: int = 0  # labelled as the class and foreground (correct fg labels)
    labelled: int = 0  # labelled as the class
    foreground: int = 0
    correct_confidence_sum: float = 0.  # over foreground tokens labelled as the class
    wrong: int = 0  # foreground tokens labelled as another class
    wrong_confidence_sum: float = 0.
    tokens: int = 0

    def __add__(self, other: 'TokenLabelCounts') -> 'TokenLabelCounts':
        return TokenLabelCounts(**{
            field.name: getattr(self, field.name) + getattr(other, field.name)
            for field in fields(self)
        })

    def metrics(self) -> Dict[str, float]:
        """Precision, recall, IoU and mean confidences (NaN where nothing was counted)."""
        union = self.labelled + self.foreground - self.labelled_foreground
        return dict(
            precision=_ratio(self.labelled_foreground, self.labelled),
            recall=_ratio(self.labelled_foreground, self.foreground),
            iou=_ratio(self.labelled_foreground, union),
            confidence_correct=_ratio(self.correct_confidence_sum, self.labelled_foreground),
            confidence_wrong=_ratio(self.wrong_confidence_sum, self.wrong),
            foreground_fraction=_ratio(self.foreground, self.tokens))


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / denominator if denominator else float('nan')


def count_token_labels(labels: torch.Tensor, confidences: torch.Tensor, classes: torch.Tensor,
                       foreground: torch.Tensor) -> TokenLabelCounts:
    """Count correct and wrong token labels against the foreground.

    Args:
        labels: Token labels (N, h, w).
        confidences: Teacher probability of each token's label (N, h, w).
        classes: Ground-truth class of each image (N,).
        foreground: Bool token foreground mask (N, h, w).
    """
    if not labels.shape == confidences.shape == foreground.shape:
        raise ValueError('count_token_labels: labels, confidences and foreground must have the '
                         f'same (N, h, w) shape, got {tuple(labels.shape)}, '
                         f'{tuple(confidences.shape)} and {tuple(foreground.shape)}.')
    if classes.shape != labels.shape[:1]:
        raise ValueError(f'count_token_labels: one class per image expected, got classes of '
                         f'shape {tuple(classes.shape)} for {labels.shape[0]} images.')
    labelled = labels == classes.view(-1, 1, 1).to(labels.device)
    foreground = foreground.bool()
    correct = labelled & foreground
    wrong = ~labelled & foreground
    return TokenLabelCounts(
        labelled_foreground=int(correct.sum()),
        labelled=int(labelled.sum()),
        foreground=int(foreground.sum()),
        correct_confidence_sum=float(confidences[correct].double().sum()),
        wrong=int(wrong.sum()),
        wrong_confidence_sum=float(confidences[wrong].double().sum()),
        tokens=labels.numel())


def token_label_quality(batches: Iterable[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                        gumbel_draws: int = 5,
                        tau: float = 1.0,
                        seed: int = 0) -> Dict[str, Dict[str, float]]:
    """Token-label quality of argmax and hard-Gumbel labels over a set of images.

    Args:
        batches: Iterable of ``(token_logits (N, K, h, w), classes (N,), foreground (N, h, w))``.
        gumbel_draws: Number of Gumbel draws; each draw labels every token once (draw ``d`` of
            batch ``b`` is seeded with ``seed + 1000 * b + d``) and the Gumbel metrics are the
            mean over draws (with their standard deviation under ``<metric>_std``).
        tau: Gumbel-softmax temperature.
        seed: Base seed of the draws.

    Returns:
        ``{'argmax': metrics, 'gumbel': metrics}`` where metrics are those of
        :meth:`TokenLabelCounts.metrics` plus ``counts`` (the pooled argmax counts, or the
        first draw's for Gumbel) and, for Gumbel, ``draws``.
    """
    if gumbel_draws < 1:
        raise ValueError(f'token_label_quality needs gumbel_draws >= 1, got {gumbel_draws}.')
    argmax_counts = TokenLabelCounts()
    gumbel_counts = [TokenLabelCounts() for _ in range(gumbel_draws)]
    for batch_index, (token_logits, classes, foreground) in enumerate(batches):
        labels, confidences = token_labels(token_logits, 'argmax')
        argmax_counts += count_token_labels(labels, confidences, classes, foreground)
        for draw in range(gumbel_draws):
            labels, confidences = token_labels(
                token_logits, 'gumbel', tau=tau, seed=seed + 1000 * batch_index + draw)
            gumbel_counts[draw] += count_token_labels(labels, confidences, classes, foreground)

    results = {'argmax': dict(argmax_counts.metrics(), counts=asdict(argmax_counts))}
    per_draw = [counts.metrics() for counts in gumbel_counts]
    gumbel = {}
    for name in per_draw[0]:
        values = np.array([metrics[name] for metrics in per_draw], dtype=np.float64)
        gumbel[name] = float(values.mean())
        gumbel[f'{name}_std'] = float(values.std())
    gumbel.update(draws=gumbel_draws, counts=asdict(gumbel_counts[0]))
    results['gumbel'] = gumbel
    return results
