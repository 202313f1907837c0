"""The shape-bias suite: one cell, ``shape-bias``, on the cue-conflict stimuli, evaluated with
:class:`~stl_mm.evaluation.metrics.shape_bias.ShapeBias` (16-class decisions from the
ImageNet-1K probabilities); the tables give the overall and per-category shape bias."""
from typing import Dict, List

from mmengine.config import Config

from stl_mm.datasets.cue_conflict import CUE_CONFLICT_CATEGORIES
from stl_mm.evaluation.reports import Table
from stl_mm.evaluation.robustness.imagenet_p import suite_dataset

__all__ = ['SHAPE_BIAS', 'shape_bias_cells', 'summarize_shape_bias', 'shape_bias_tables']

SHAPE_BIAS = 'shape-bias'
_PREFIX = 'shape_bias/'


def shape_bias_cells(cfg: Config, spec: dict) -> List[dict]:
    """The suite's one cell, with its own evaluator."""
    return [dict(name=SHAPE_BIAS, evaluator=dict(type='ShapeBias'),
                 dataset=suite_dataset(cfg, spec, ('img_path', 'shape', 'texture')))]


def summarize_shape_bias(cells: Dict[str, dict]) -> Dict[str, dict]:
    """``{'shape-bias': metrics without their prefix}`` when the cell is recorded."""
    if SHAPE_BIAS not in cells:
        return {}
    metrics = cells[SHAPE_BIAS]['metrics']
    return {SHAPE_BIAS: {key[len(_PREFIX):]: value for key, value in metrics.items()
                         if key.startswith(_PREFIX)}}


def shape_bias_tables(summary: dict) -> List[Table]:
    """The overall figures, then one row per shape category."""
    labels = {'shape_bias': 'shape bias', 'shape_match': 'shape match',
              'texture_match': 'texture match', 'stimuli': 'stimuli'}
    keys = [key for key in labels if key in summary]
    overall = Table('Shape bias (cue conflict)', [labels[k] for k in keys],
                    [[int(summary[k]) if k == 'stimuli' else summary[k] for k in keys]])
    rows = [[category, summary.get(f'shape_bias/{category}', 'n/a'),
             int(summary[f'shape_decisions/{category}']),
             int(summary[f'texture_decisions/{category}'])]
            for category in CUE_CONFLICT_CATEGORIES
            if f'shape_decisions/{category}' in summary]
    return [overall, Table('Shape bias per shape category',
                           ['category', 'shape bias', 'shape decisions', 'texture decisions'],
                           rows)]
