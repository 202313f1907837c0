"""The shape-bias suite: one cell named by the suite (``shape-bias``) on the cue-conflict
stimuli, evaluated with :class:`~stl_mm.evaluation.metrics.shape_bias.ShapeBias` (16-class
decisions from the ImageNet-1K probabilities); the tables give the overall and per-category
shape bias. The hooks (``shape_bias_*``) take the suite's name first, like every suite of the
battery (:mod:`stl_mm.evaluation.robustness.imagenet`)."""
from typing import Any, Dict, List, Optional, Tuple

from stl_mm.datasets.cue_conflict import CUE_CONFLICT_CATEGORIES
from stl_mm.evaluation.reports import Table
from stl_mm.evaluation.robustness.suite_cells import CellContext, checked_cell, suite_dataset

__all__ = ['SHAPE_BIAS', 'SHAPE_BIAS_NOTE', 'shape_bias_cells',
           'shape_bias_summary_of', 'shape_bias_tables', 'shape_bias_overview',
           'shape_bias_notes']

SHAPE_BIAS = 'shape-bias'
SHAPE_BIAS_NOTE = ('Shape bias: shape decisions among shape-or-texture decisions on the '
                   'cue-conflict stimuli (same shape and texture left out), in percent; shape / '
                   'texture match: percent of those stimuli decided for their shape / texture '
                   'category.')
_PREFIX = 'shape_bias/'


def shape_bias_cells(suite: str, context: CellContext) -> List[dict]:
    """The suite's one cell, with its own evaluator."""
    dataset = suite_dataset(context.cfg, context.specs[suite], ('img_path', 'shape', 'texture'))
    return [checked_cell(context, 'The cue-conflict stimuli', suite, suite, dataset,
                         dict(type='ShapeBias'))]


def shape_bias_summary_of(suite: str, cells: Dict[str, dict], clean: Optional[float],
                          spec: dict) -> dict:
    """The cell's metrics without their prefix."""
    return {key[len(_PREFIX):]: value for key, value in cells[suite]['metrics'].items()
            if key.startswith(_PREFIX)}


def shape_bias_tables(suite: str, cells: Dict[str, dict], summary: dict) -> List[Table]:
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


def shape_bias_notes(suite: str, spec: dict) -> List[str]:
    """What the report says about the suite's figures."""
    return [SHAPE_BIAS_NOTE]


def shape_bias_overview(suite: str, cells: Dict[str, dict],
                        summary: dict) -> List[Tuple[str, Any]]:
    """The overall shape bias."""
    return [('shape bias', summary.get('shape_bias', '-'))]
