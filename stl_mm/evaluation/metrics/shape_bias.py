"""Shape bias on the cue-conflict stimuli (Geirhos et al., "ImageNet-trained CNNs are biased
towards texture; increasing shape bias improves accuracy and robustness", ICLR 2019).

Each stimulus has the shape of one of 16 categories and the texture of another. The model's
16-class decision is the category whose ImageNet-1K classes have the highest mean probability
(:data:`~stl_mm.datasets.cue_conflict.CUE_CONFLICT_CATEGORIES`). Among the stimuli whose shape
and texture differ, a decision is a *shape* decision when it names the shape category, a
*texture* decision when it names the texture category (any other decision is neither), and

    shape bias = shape decisions / (shape decisions + texture decisions),

reported in percent overall and per shape category.
"""
from typing import Dict, List, Mapping, Sequence, Tuple

import torch
from mmengine.evaluator import BaseMetric

from stl_mm.registry import register

__all__ = ['category_decision', 'shape_bias_summary', 'ShapeBias']


def category_decision(probabilities: torch.Tensor,
                      categories: Mapping[str, Sequence[int]]) -> str:
    """The category with the highest mean probability over its ImageNet classes; ties go to the
    category first in sorted order, as in the reference mapping.

    Args:
        probabilities: The 1000 ImageNet-1K class probabilities.
        categories: Category -> ImageNet class indices.
    """
    best, decision = -float('inf'), None
    for category in sorted(categories):
        value = float(probabilities[torch.as_tensor(categories[category])].mean())
        if value > best:
            best, decision = value, category
    return decision


def shape_bias_summary(decisions: Sequence[Tuple[str, str, str]],
                       categories: Sequence[str]) -> Dict[str, float]:
    """Shape bias from ``(shape, texture, decision)`` per stimulus.

    Stimuli whose shape and texture are the same category are left out. Returns
    ``shape_bias``, ``shape_match`` and ``texture_match`` (percent of the cue-conflict stimuli
    decided for their shape, their texture), ``stimuli`` (their number), and per shape category
    ``shape_bias/<c>``, ``shape_decisions/<c>`` and ``texture_decisions/<c>``. A bias without any
    shape or texture decision is undefined and left out.
    """
    conflict = [(s, t, d) for s, t, d in decisions if s != t]
    if not conflict:
        raise ValueError('No cue-conflict stimuli (every stimulus has the same shape and texture '
                         'category): shape bias is undefined.')

    def bias(subset) -> Dict[str, float]:
        shape = sum(d == s for s, _, d in subset)
        texture = sum(d == t for _, t, d in subset)
        result = {'shape': float(shape), 'texture': float(texture)}
        if shape + texture:
            result['bias'] = 100 * shape / (shape + texture)
        return result

    overall = bias(conflict)
    summary = {'stimuli': float(len(conflict)),
               'shape_match': 100 * overall['shape'] / len(conflict),
               'texture_match': 100 * overall['texture'] / len(conflict)}
    if 'bias' in overall:
        summary['shape_bias'] = overall['bias']
    for category in categories:
        subset = [item for item in conflict if item[0] == category]
        if not subset:
            continue
        result = bias(subset)
        summary[f'shape_decisions/{category}'] = result['shape']
        summary[f'texture_decisions/{category}'] = result['texture']
        if 'bias' in result:
            summary[f'shape_bias/{category}'] = result['bias']
    return summary


@register('METRICS', codebases=('mmpretrain',))
class ShapeBias(BaseMetric):
    """Shape bias of a 1000-class ImageNet classifier on cue-conflict stimuli.

    Samples carry ``shape`` and ``texture`` (category names) and ``img_path``; pack them with
    ``PackInputs(meta_keys=(..., 'img_path', 'shape', 'texture'))``. ``pred_score`` must be the
    class probabilities (mmpretrain's classification heads give softmax scores). Decisions are
    keyed by image path, so stimuli repeated by a distributed sampler's padding count once. The
    category mapping comes from ``dataset_meta['category_indices']``
    (:class:`~stl_mm.datasets.cue_conflict.CueConflict` sets it).

    Args:
        collect_device: ``'cpu'`` or ``'gpu'``, for gathering results across ranks.
        prefix: Prefix of the metric names; defaults to ``shape_bias``.
    """
    default_prefix = 'shape_bias'

    def _categories(self) -> Dict[str, Tuple[int, ...]]:
        categories = (self.dataset_meta or {}).get('category_indices')
        if not categories:
            raise KeyError("ShapeBias needs dataset_meta['category_indices'] (the CueConflict "
                           'dataset sets it).')
        return categories

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        """Record each stimulus' 16-class decision."""
        categories = self._categories()
        needed = max(max(indices) for indices in categories.values())
        for sample in data_samples:
            if 'pred_score' not in sample or 'shape' not in sample:
                raise KeyError("ShapeBias needs pred_score and the samples' 'shape'/'texture' "
                               "(add them to PackInputs meta_keys).")
            scores = torch.as_tensor(sample['pred_score']).flatten().float()
            if len(scores) <= needed:
                raise ValueError(f'The 16-class mapping uses ImageNet-1K outputs up to index '
                                 f'{needed}, but the model gives {len(scores)} scores; evaluate a '
                                 '1000-class ImageNet model.')
            self.results.append(dict(image=str(sample['img_path']), shape=sample['shape'],
                                     texture=sample['texture'],
                                     decision=category_decision(scores, categories)))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        """Shape bias overall and per shape category (percent)."""
        unique = {}
        for result in results:
            unique.setdefault(result['image'], result)
        decisions = [(r['shape'], r['texture'], r['decision']) for r in unique.values()]
        summary = shape_bias_summary(decisions, sorted(self._categories()))
        summary['decisions'] = float(len(decisions))
        return summary
