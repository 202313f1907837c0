"""ImageNet-P stability metrics: flip probability, top-5 distance, and their AlexNet-normalised
means mFR and mT5D (Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations", ICLR 2019, section 3 and the ImageNet-P evaluation code of
github.com/hendrycks/robustness, ``ImageNet-P/test.py``).

A perturbation sequence is ``x_1, ..., x_n`` (frames of one video). With ``f`` the top-1 class:

* Temporal perturbations (blur, weather, digital): ``FP = mean_j 1(f(x_j) != f(x_{j-1}))`` over
  ``j = 2..n``, averaged over sequences.
* Noise perturbations (names ending in ``noise``): the frames are independent draws, ``x_1`` is
  the clean image, and every frame is compared with it: ``FP = mean_j 1(f(x_j) != f(x_1))``.
* Top-5 distance of two frames: with ``sigma(i)`` the rank, in the second frame, of the first
  frame's ``i``-th class, ``d = sum_{i=1..5} |min(sigma(i), 6) - i|`` (the paper's
  ``sum_i sum_{j=min(i, sigma(i))+1}^{max(i, sigma(i))} 1(1 <= j - 1 <= 5)``); ``T5D`` averages it
  over the same frame pairs as ``FP``. It needs only each frame's five best classes.
* ``FR_p = FP_p / FP_p^AlexNet`` and ``T5D_p / T5D_p^AlexNet``; ``mFR`` and ``mT5D`` their means
  over the 10 benchmark perturbations evaluated. Flip probabilities and rates are in percent.

This is difficulty 1 of the reference code (adjacent frames; the noise sequences of the main
folders), the setting the ImageNet-P leaderboard reports.
"""
from collections import Counter, defaultdict
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.evaluator import BaseMetric

from stl_mm.registry import register

__all__ = ['IMAGENET_P_PERTURBATIONS', 'EXTRA_PERTURBATIONS', 'checked_alexnet_reference',
           'is_noise_perturbation', 'frame_pairs', 'top5_distance', 'sequence_stability',
           'summarize_perturbations', 'PerturbationStability']

#: The 10 test perturbations of ImageNet-P, in the paper's order; they enter mFR and mT5D.
IMAGENET_P_PERTURBATIONS = ('gaussian_noise', 'shot_noise', 'motion_blur', 'zoom_blur', 'snow',
                            'brightness', 'translate', 'rotate', 'tilt', 'scale')
#: Validation perturbations of the release (the reference code's other choices); reported, never
#: in mFR or mT5D.
EXTRA_PERTURBATIONS = ('speckle_noise', 'gaussian_blur', 'spatter', 'shear')
TOP_K = 5
ALEXNET_KEYS = ('flip_probability', 'top5_distance')


def checked_alexnet_reference(reference: Optional[Mapping[str, Mapping[str, float]]],
                              source: str) -> Optional[Dict[str, Dict[str, float]]]:
    """AlexNet's ImageNet-P figures, the normalisers of FR, mFR and mT5D, checked.

    Args:
        reference: ``{perturbation: {'flip_probability': percent, 'top5_distance': d}}`` for
            every benchmark perturbation (more are allowed), or ``None`` for none.
        source: Where the figures were set, named in the error.

    Returns:
        The figures as floats, or ``None``.

    Raises:
        ValueError: A benchmark perturbation is missing, or a figure is not a positive number
            (a partial normaliser would give an mFR over other perturbations than the paper's).
    """
    if reference is None:
        return None
    if not isinstance(reference, Mapping):
        raise ValueError(f'{source} must map each perturbation to {{"flip_probability": ..., '
                         f'"top5_distance": ...}}, got {type(reference).__name__}.')
    missing = [p for p in IMAGENET_P_PERTURBATIONS if p not in reference]
    if missing:
        raise ValueError(f'{source} lacks AlexNet\'s figures for {missing}: give all 10 '
                         f'benchmark perturbations {list(IMAGENET_P_PERTURBATIONS)}, or None.')
    checked = {}
    for perturbation, figures in reference.items():
        values = {key: (figures or {}).get(key) if isinstance(figures, Mapping) else None
                  for key in ALEXNET_KEYS}
        bad = [key for key, value in values.items()
               if isinstance(value, bool) or not isinstance(value, (int, float))
               or not 0 < value < float('inf')]
        if bad:
            raise ValueError(f'{source}[{perturbation!r}] needs positive numbers for {bad} '
                             f'(flip probability in percent, top-5 distance), got {figures!r}.')
        checked[perturbation] = {key: float(value) for key, value in values.items()}
    return checked


def is_noise_perturbation(perturbation: str) -> bool:
    """Noise sequences compare every frame with the clean first one."""
    return perturbation.endswith('noise')


def frame_pairs(num_frames: int, noise: bool) -> List[Tuple[int, int]]:
    """The (earlier, later) frame indices whose predictions are compared."""
    if num_frames < 2:
        raise ValueError(f'A perturbation sequence needs at least 2 frames, got {num_frames}.')
    return [(0 if noise else j - 1, j) for j in range(1, num_frames)]


def top5_distance(first: Sequence[int], second: Sequence[int]) -> int:
    """Top-5 distance between two frames given their five best classes, best first."""
    if len(first) != TOP_K or len(second) != TOP_K:
        raise ValueError(f'top5_distance needs the {TOP_K} best classes of each frame.')
    rank_in_second = {label: rank for rank, label in enumerate(second, start=1)}
    return sum(abs(min(rank_in_second.get(label, TOP_K + 1), TOP_K + 1) - rank)
               for rank, label in enumerate(first, start=1))


def sequence_stability(sequences: Sequence[Sequence[Sequence[int]]],
                       noise: bool) -> Tuple[float, float]:
    """Flip probability (percent) and mean top-5 distance of a set of sequences.

    Args:
        sequences: Per sequence, per frame in order, the five best classes (best first).
        noise: Compare with the first frame (noise perturbations) instead of the previous one.

    Returns:
        ``(FP in percent, T5D)``, each the mean over sequences of the mean over frame pairs.
    """
    if not sequences:
        raise ValueError('No perturbation sequences to measure.')
    flips, distances = [], []
    for frames in sequences:
        pairs = frame_pairs(len(frames), noise)
        flips.append(np.mean([frames[a][0] != frames[b][0] for a, b in pairs]))
        distances.append(np.mean([top5_distance(frames[a], frames[b]) for a, b in pairs]))
    return 100 * float(np.mean(flips)), float(np.mean(distances))


def summarize_perturbations(stability: Mapping[str, Tuple[float, float]],
                            alexnet: Optional[Mapping[str, Mapping[str, float]]] = None
                            ) -> Dict[str, float]:
    """The ImageNet-P summary from per-perturbation ``(FP percent, T5D)``.

    Args:
        stability: Perturbation -> ``(FP, T5D)`` from :func:`sequence_stability`.
        alexnet: Perturbation -> ``{'flip_probability': percent, 'top5_distance': d}`` of
            AlexNet, the normaliser. Without it (or for perturbations it lacks) no rates, mFR or
            mT5D are given: they would be numbers of another definition.

    Returns:
        ``FP/<p>``, ``T5D/<p>``, ``mFP`` and ``mT5D_raw`` (means over the benchmark
        perturbations evaluated), and with AlexNet's values ``FR/<p>``, ``T5DR/<p>`` (percent)
        and ``mFR``, ``mT5D`` (percent, over the benchmark perturbations AlexNet covers).
    """
    summary: Dict[str, float] = {}
    rates, distance_ratios, fps, t5ds = [], [], [], []
    for perturbation, (fp, t5d) in stability.items():
        summary[f'FP/{perturbation}'], summary[f'T5D/{perturbation}'] = fp, t5d
        benchmark = perturbation in IMAGENET_P_PERTURBATIONS
        if benchmark:
            fps.append(fp)
            t5ds.append(t5d)
        reference = (alexnet or {}).get(perturbation)
        if reference is None:
            continue
        summary[f'FR/{perturbation}'] = 100 * fp / reference['flip_probability']
        summary[f'T5DR/{perturbation}'] = 100 * t5d / reference['top5_distance']
        if benchmark:
            rates.append(summary[f'FR/{perturbation}'])
            distance_ratios.append(summary[f'T5DR/{perturbation}'])
    if fps:
        summary['mFP'], summary['mT5D_raw'] = float(np.mean(fps)), float(np.mean(t5ds))
    if rates:
        summary['mFR'], summary['mT5D'] = float(np.mean(rates)), float(np.mean(distance_ratios))
    return summary


@register('METRICS', codebases=('mmpretrain',))
class PerturbationStability(BaseMetric):
    """Flip probability and top-5 distance of one ImageNet-P perturbation.

    Each sample is one frame carrying ``sequence`` (a key naming its video) and ``frame`` (its
    index); pack them with ``PackInputs(meta_keys=(..., 'sequence', 'frame'))``. The metric
    keeps each frame's five best classes, keyed by ``(sequence, frame)``: frames repeated by a
    distributed sampler's padding are counted once, so any number of processes gives the
    single-process figures. Every sequence must be complete (frames ``0..n-1``) and all of the
    same length; the perturbation is the one of ``dataset_meta['perturbations']``.

    The five best classes are taken from ``pred_score`` (mmpretrain's softmax probabilities),
    where the reference ranks the logits: the same order, except where float32 probabilities of
    classes in a frame's top five underflow to exactly zero (logits more than ~87 below the
    best), whose order is then arbitrary.

    Args:
        collect_device: ``'cpu'`` or ``'gpu'``, for gathering results across ranks.
        prefix: Prefix of the metric names; defaults to ``perturbation``.
    """
    default_prefix = 'perturbation'

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        """Record each frame's five best classes."""
        for sample in data_samples:
            if 'pred_score' not in sample:
                raise KeyError('PerturbationStability needs class scores (pred_score); use a '
                               'classifier whose predict() returns them.')
            if 'sequence' not in sample or 'frame' not in sample:
                raise KeyError("Samples lack 'sequence'/'frame': add them to the test "
                               "pipeline's PackInputs meta_keys.")
            scores = torch.as_tensor(sample['pred_score']).flatten()
            if len(scores) < TOP_K:
                raise ValueError(f'Top-5 distance needs at least {TOP_K} class scores, got '
                                 f'{len(scores)}.')
            self.results.append(dict(sequence=str(sample['sequence']),
                                     frame=int(sample['frame']),
                                     top5=scores.topk(TOP_K).indices.tolist()))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        """FP (percent) and T5D of the perturbation, over complete sequences of equal length."""
        perturbations = tuple((self.dataset_meta or {}).get('perturbations') or ())
        if len(perturbations) != 1:
            raise KeyError("PerturbationStability measures one perturbation, named by "
                           "dataset_meta['perturbations'] (the ImageNetP / PerturbedImageNet "
                           f'datasets set it); got {perturbations}.')
        perturbation = perturbations[0]
        frames: Dict[str, Dict[int, List[int]]] = defaultdict(dict)
        for result in results:
            frames[result['sequence']].setdefault(result['frame'], result['top5'])
        if not frames:
            raise ValueError('PerturbationStability received no predictions.')
        lengths = {name: len(seen) for name, seen in frames.items()}
        for name, seen in frames.items():
            if sorted(seen) != list(range(len(seen))):
                missing = sorted(set(range(max(seen) + 1)) - set(seen))
                raise ValueError(f'{perturbation} sequence {name} lacks frames {missing[:5]}; '
                                 'every frame of a sequence must be evaluated.')
        if len(set(lengths.values())) > 1:
            common = Counter(lengths.values()).most_common(1)[0][0]
            odd = [f'{name}: {n}' for name, n in sorted(lengths.items()) if n != common]
            raise ValueError(f'{perturbation} sequences differ in length: most have {common} '
                             f'frames, {len(odd)} not ({", ".join(odd[:3])}); flip rates over '
                             'unequal sequences are not comparable. Re-extract those videos.')
        ordered = [[seen[j] for j in range(len(seen))] for _, seen in sorted(frames.items())]
        fp, t5d = sequence_stability(ordered, is_noise_perturbation(perturbation))
        return {'flip_probability': fp, 'top5_distance': t5d,
                'sequences': float(len(ordered)), 'frames': float(len(ordered[0]))}
