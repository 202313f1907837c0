"""The ImageNet-P suite: one cell per perturbation, ``in-p/<perturbation>``, evaluated frame by
frame with :class:`~stl_mm.evaluation.metrics.perturbation.PerturbationStability` and summarised
as flip probability, top-5 distance and (where AlexNet's figures are known) FR, mFR and mT5D.

The suite's hooks (``in_p_*``) take the suite's name first, like every suite of the battery
(:mod:`stl_mm.evaluation.robustness.imagenet`). Whether the sequences are read or generated
follows from the suite's dataset (``ImageNetP`` or ``PerturbedImageNet``). Also here: the cell
dataset of every suite whose samples carry their own keys (:func:`keyed_suite_dataset`) and the
cell with its own metric whose pending data is read up front (:func:`checked_metric_cell`), which
the shape-bias suite shares.
"""
import copy
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config

from stl_mm.evaluation.metrics.perturbation import (ALEXNET_IMAGENET_P,
                                                    IMAGENET_P_PERTURBATIONS,
                                                    summarize_perturbations)
from stl_mm.evaluation.reports import Table
from stl_mm.evaluation.robustness.results import data_source

__all__ = ['ON_THE_FLY_DATASET', 'keyed_suite_dataset', 'checked_metric_cell',
           'selected_perturbations',
           'in_p_names', 'in_p_cells', 'in_p_summary', 'in_p_tables', 'in_p_overview',
           'in_p_data', 'in_p_notes']

ON_THE_FLY_DATASET = 'PerturbedImageNet'
IN_P_NOTE = ('ImageNet-P: flip probability, FR and mFR in percent; T5D in rank positions, T5D '
             'rel. and mT5D in percent of AlexNet\'s; FR, mFR and mT5D are normalised by AlexNet '
             'over the 10 benchmark perturbations evaluated, and left out where AlexNet\'s '
             'figures are not known (stl_mm.evaluation.metrics.perturbation.ALEXNET_IMAGENET_P).')
ON_THE_FLY_NOTE = ('ImageNet-P was generated on the fly from the clean val set (simplified '
                   'generator, no video compression, other random draws): figures differ from '
                   'the released sequences.')
FP = 'perturbation/flip_probability'
T5D = 'perturbation/top5_distance'


def keyed_suite_dataset(cfg: Config, spec: dict, keys: Sequence[str],
                        loader: Optional[str] = None, **cell_arguments) -> dict:
    """A cell's dataset: the spec's dataset with the cell's arguments and the model's test
    pipeline, with the spec's steps after loading (``corruption_pipeline``), ``keys`` packed for
    the metric and, with ``loader``, the image loading step replaced (e.g. by
    ``LoadSequenceFrame``)."""
    # Imported here: the battery module imports this one.
    from stl_mm.evaluation.robustness.imagenet import _transform_type, suite_pipeline
    model_dataset = cfg.test_dataloader['dataset']
    if 'pipeline' not in model_dataset:
        raise ValueError('The model config\'s test_dataloader.dataset has no pipeline; use a '
                         'config with a plain (unwrapped) test dataset.')
    pipeline = suite_pipeline(model_dataset['pipeline'], spec.get('corruption_pipeline', ()))
    pack = [t for t in pipeline if _transform_type(t).split('.')[-1].startswith('Pack')][-1]
    pack['meta_keys'] = tuple(pack['meta_keys']) + tuple(
        key for key in keys if key not in pack['meta_keys'])
    if loader is not None:
        loads = [i for i, t in enumerate(pipeline) if 'LoadImage' in _transform_type(t)]
        if not loads:
            raise ValueError(f'The model\'s test pipeline has no LoadImageFromFile step for '
                             f'{loader} to replace.')
        pipeline[loads[0]] = dict(type=loader)
    dataset = dict(copy.deepcopy(spec['dataset']), **cell_arguments)
    dataset['pipeline'] = pipeline
    dataset.setdefault('test_mode', True)
    return dataset


def checked_metric_cell(name: str, title: str, suite: str, dataset: dict, evaluator: dict,
                        pending: Sequence[str]) -> dict:
    """A cell with its own evaluator; a pending cell's data is read now, so a missing or
    malformed tree stops the run before anything is evaluated."""
    if name in pending:
        from mmpretrain.registry import DATASETS
        try:
            DATASETS.build(dict(dataset, pipeline=[]))
        except (FileNotFoundError, ValueError) as error:
            raise SystemExit(
                f'{title} cannot be read: {error}\nSet its data root in the suites file '
                f'(configs/robustness/suites.py) or for this run with --data-root '
                f'{suite}=PATH, or leave the suite out of --suites.')
    return dict(name=name, dataset=dataset, evaluator=evaluator)


def selected_perturbations(chosen: Optional[Sequence[str]], on_the_fly: bool) -> List[str]:
    """The perturbations of a run: ``chosen`` (``'all'`` for every one, repeats dropped) or, by
    default, the 10 of mFR, or the ones the on-the-fly generator makes."""
    from stl_mm.datasets.imagenet_p import ALL_PERTURBATIONS, GENERATED_PERTURBATIONS
    default = GENERATED_PERTURBATIONS if on_the_fly else IMAGENET_P_PERTURBATIONS
    chosen = chosen or default
    return list(dict.fromkeys(ALL_PERTURBATIONS if 'all' in chosen else chosen))


def _on_the_fly(spec: dict) -> bool:
    return spec['dataset'].get('type') == ON_THE_FLY_DATASET


def in_p_names(suite: str, selection: Dict[str, Any]) -> List[str]:
    """``<suite>/<perturbation>`` for the selected ``perturbations``."""
    return [f'{suite}/{perturbation}' for perturbation in selection['perturbations']]


def imagenet_p_cells(cfg: Config, suite: str, spec: dict, selection: Dict[str, Any],
                     pending: Sequence[str]) -> List[dict]:
    """One cell per perturbation, each with its own evaluator (frames, not accuracies)."""
    from stl_mm.datasets.imagenet_p import GENERATED_PERTURBATIONS
    on_the_fly = _on_the_fly(spec)
    missing = [p for p in selection['perturbations']
               if on_the_fly and p not in GENERATED_PERTURBATIONS]
    if missing:
        raise SystemExit(f'--in-p-on-the-fly cannot generate {missing} (it makes '
                         f'{", ".join(GENERATED_PERTURBATIONS)}); leave them out with '
                         '--perturbations, or evaluate the released sequences.')
    loader = None if on_the_fly else 'LoadSequenceFrame'
    return [checked_metric_cell(name, f'ImageNet-P {name[len(suite) + 1:]}', suite,
                                keyed_suite_dataset(cfg, spec, ('sequence', 'frame'), loader,
                                                    perturbation=name[len(suite) + 1:]),
                                dict(type='PerturbationStability'), pending)
            for name in in_p_names(suite, selection)]


def in_p_cells(suite: str, context) -> List[dict]:
    """The suite's cells from the battery's cell context (``cfg``, ``specs``, ``selection``,
    ``pending``)."""
    return imagenet_p_cells(context.cfg, suite, context.specs[suite], context.selection,
                            context.pending)


def _stability(suite: str, cells: Dict[str, dict]) -> Dict[str, Tuple[float, float]]:
    prefix = suite + '/'
    return {name[len(prefix):]: (cell['metrics'][FP], cell['metrics'][T5D])
            for name, cell in cells.items() if name.startswith(prefix)}


def in_p_summary(suite: str, cells: Dict[str, dict], clean: Optional[float] = None) -> dict:
    """FP and T5D per perturbation, and FR, mFR and mT5D where AlexNet's figures are known
    (:data:`~stl_mm.evaluation.metrics.perturbation.ALEXNET_IMAGENET_P`)."""
    return summarize_perturbations(_stability(suite, cells), ALEXNET_IMAGENET_P)


def in_p_tables(suite: str, cells: Dict[str, dict], summary: dict) -> List[Table]:
    """Per-perturbation table and the summary table."""
    order = IMAGENET_P_PERTURBATIONS
    perturbations = sorted(_stability(suite, cells), key=lambda p: ((order + (p, )).index(p), p))
    rows = [[p, summary[f'FP/{p}'], summary.get(f'FR/{p}', '-'), summary[f'T5D/{p}'],
             summary.get(f'T5DR/{p}', '-'),
             int(cells[f'{suite}/{p}']['metrics']['perturbation/sequences'])]
            for p in perturbations]
    tables = [Table('ImageNet-P', ['perturbation', 'flip prob.', 'FR', 'T5D', 'T5D rel.',
                                   'sequences'], rows)]
    labels = {'mFR': 'mFR', 'mT5D': 'mT5D', 'mFP': 'mean flip prob.', 'mT5D_raw': 'mean T5D'}
    keys = [key for key in labels if key in summary]
    if keys:
        tables.append(Table('ImageNet-P summary', [labels[k] for k in keys],
                            [[summary[k] for k in keys]]))
    return tables


def in_p_overview(suite: str, cells: Dict[str, dict], summary: dict) -> List[Tuple[str, Any]]:
    """mFR and mT5D (``-`` without AlexNet's figures)."""
    return [('IN-P mFR', summary.get('mFR', '-')), ('IN-P mT5D', summary.get('mT5D', '-'))]


def in_p_notes(suite: str, spec: dict) -> List[str]:
    """What the report says about the suite's figures (and their data, when generated)."""
    return [IN_P_NOTE] + ([ON_THE_FLY_NOTE] if _on_the_fly(spec) else [])


def in_p_data(suite: str, spec: dict, on_the_fly: bool = False) -> dict:
    """The release's root, or the clean val root and seed of generated sequences."""
    root = spec['dataset'].get('data_root')
    if _on_the_fly(spec):
        return data_source(root, 'on_the_fly', seed=spec['dataset'].get('seed', 0))
    return data_source(root, 'files')
