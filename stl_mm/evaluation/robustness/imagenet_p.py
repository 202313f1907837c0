"""The ImageNet-P suite: one cell per perturbation, ``in-p/<perturbation>``, evaluated frame by
frame with :class:`~stl_mm.evaluation.metrics.perturbation.PerturbationStability`, summarised as
flip probability, top-5 distance, and (with AlexNet's values in the suites file) mFR and mT5D.

Also the suite-pipeline helper of every suite whose samples carry their own keys
(:func:`keyed_pipeline`), which the shape-bias suite shares.
"""
import copy
from typing import Dict, List, Optional, Sequence

from mmengine.config import Config

from stl_mm.evaluation.metrics.perturbation import (IMAGENET_P_PERTURBATIONS,
                                                    summarize_perturbations)
from stl_mm.evaluation.reports import Table

__all__ = ['IN_P', 'keyed_pipeline', 'suite_dataset', 'imagenet_p_cells', 'imagenet_p_names',
           'summarize_imagenet_p', 'imagenet_p_tables', 'ON_THE_FLY_NOTE']

IN_P = 'in-p/'
ON_THE_FLY_NOTE = ('ImageNet-P was generated on the fly from the clean val set (simplified '
                   'generator, no video compression, other random draws): figures differ from '
                   'the released sequences.')


def _pack(pipeline: List[dict]) -> dict:
    from stl_mm.evaluation.robustness.imagenet import _transform_type
    packs = [t for t in pipeline if _transform_type(t).split('.')[-1].startswith('Pack')]
    return packs[-1]


def keyed_pipeline(model_pipeline: Sequence[dict], spec: dict, keys: Sequence[str],
                   loader: Optional[str] = None) -> List[dict]:
    """The model's test pipeline for a suite: the spec's steps after loading, ``keys`` packed,
    and (``loader``) the image loading step replaced, e.g. by ``LoadSequenceFrame``."""
    from stl_mm.evaluation.robustness.imagenet import _transform_type, suite_pipeline
    pipeline = suite_pipeline(model_pipeline, spec.get('corruption_pipeline', ()))
    pack = _pack(pipeline)
    pack['meta_keys'] = tuple(pack['meta_keys']) + tuple(
        key for key in keys if key not in pack['meta_keys'])
    if loader is not None:
        loads = [i for i, t in enumerate(pipeline) if 'LoadImage' in _transform_type(t)]
        if not loads:
            raise ValueError(f'The model\'s test pipeline has no LoadImageFromFile step for '
                             f'{loader} to replace.')
        pipeline[loads[0]] = dict(type=loader)
    return pipeline


def suite_dataset(cfg: Config, spec: dict, keys: Sequence[str], loader: Optional[str] = None,
                  **cell_arguments) -> dict:
    """A cell's dataset: the spec's dataset with the cell's arguments and the keyed pipeline."""
    model_dataset = cfg.test_dataloader['dataset']
    if 'pipeline' not in model_dataset:
        raise ValueError('The model config\'s test_dataloader.dataset has no pipeline; use a '
                         'config with a plain (unwrapped) test dataset.')
    dataset = dict(copy.deepcopy(spec['dataset']), **cell_arguments)
    dataset['pipeline'] = keyed_pipeline(model_dataset['pipeline'], spec, keys, loader)
    dataset.setdefault('test_mode', True)
    return dataset


def imagenet_p_names(perturbations: Sequence[str]) -> List[str]:
    """Cell names of the chosen perturbations."""
    return [IN_P + perturbation for perturbation in perturbations]


def imagenet_p_cells(cfg: Config, spec: dict, perturbations: Sequence[str],
                     on_the_fly: bool) -> List[dict]:
    """One cell per perturbation, each with its own evaluator (frames, not accuracies)."""
    from stl_mm.datasets.imagenet_p import GENERATED_PERTURBATIONS
    missing = [p for p in perturbations if on_the_fly and p not in GENERATED_PERTURBATIONS]
    if missing:
        raise SystemExit(f'--in-p-on-the-fly cannot generate {missing} (it makes '
                         f'{", ".join(GENERATED_PERTURBATIONS)}); leave them out with '
                         '--perturbations, or evaluate the released sequences.')
    loader = None if on_the_fly else 'LoadSequenceFrame'
    return [dict(name=name, evaluator=dict(type='PerturbationStability'),
                 dataset=suite_dataset(cfg, spec, ('sequence', 'frame'), loader,
                                       perturbation=name[len(IN_P):]))
            for name in imagenet_p_names(perturbations)]


def summarize_imagenet_p(cells: Dict[str, dict],
                         alexnet: Optional[Dict[str, dict]] = None) -> Dict[str, dict]:
    """``{'in-p': summary}`` from the recorded ImageNet-P cells (none when there are none)."""
    stability = {name[len(IN_P):]: (cell['metrics']['perturbation/flip_probability'],
                                    cell['metrics']['perturbation/top5_distance'])
                 for name, cell in cells.items() if name.startswith(IN_P)}
    return {'in-p': summarize_perturbations(stability, alexnet)} if stability else {}


def imagenet_p_tables(cells: Dict[str, dict], summary: dict) -> List[Table]:
    """Per-perturbation table and the summary table of ImageNet-P."""
    names = [name for name in cells if name.startswith(IN_P)]
    order = IMAGENET_P_PERTURBATIONS
    perturbations = sorted((name[len(IN_P):] for name in names),
                           key=lambda p: ((order + (p, )).index(p), p))
    rows = [[p, summary[f'FP/{p}'], summary.get(f'FR/{p}', '-'), summary[f'T5D/{p}'],
             summary.get(f'T5DR/{p}', '-'),
             int(cells[IN_P + p]['metrics']['perturbation/sequences'])]
            for p in perturbations]
    tables = [Table('ImageNet-P', ['perturbation', 'flip prob.', 'FR', 'T5D', 'T5D rel.',
                                   'sequences'], rows)]
    labels = {'mFR': 'mFR', 'mT5D': 'mT5D', 'mFP': 'mean flip prob.', 'mT5D_raw': 'mean T5D'}
    keys = [key for key in labels if key in summary]
    if keys:
        tables.append(Table('ImageNet-P summary', [labels[k] for k in keys],
                            [[summary[k] for k in keys]]))
    return tables
