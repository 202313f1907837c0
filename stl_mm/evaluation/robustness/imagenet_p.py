"""The ImageNet-P suite: one cell per perturbation, ``in-p/<perturbation>``, evaluated frame by
frame with :class:`~stl_mm.evaluation.metrics.perturbation.PerturbationStability` and summarised
as flip probability, top-5 distance and, with AlexNet's figures from the suites file, FR, mFR
and mT5D.

The suite's hooks (``in_p_*``) take the suite's name first, like every suite of the battery
(:mod:`stl_mm.evaluation.robustness.imagenet`). Whether the sequences are read or generated
follows from the suite's dataset (``ImageNetP`` or ``PerturbedImageNet``).
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple

from stl_mm.evaluation.metrics.perturbation import (IMAGENET_P_PERTURBATIONS,
                                                    checked_alexnet_reference,
                                                    summarize_perturbations)
from stl_mm.evaluation.reports import Table
from stl_mm.evaluation.robustness.results import data_source
from stl_mm.evaluation.robustness.suite_cells import CellContext, checked_cell, suite_dataset

__all__ = ['ON_THE_FLY_DATASET', 'selected_perturbations', 'alexnet_reference',
           'in_p_names', 'in_p_cells', 'in_p_summary', 'in_p_tables', 'in_p_overview',
           'in_p_data', 'in_p_notes']

ON_THE_FLY_DATASET = 'PerturbedImageNet'
IN_P_NOTE = ('ImageNet-P: flip probability, FR and mFR in percent; T5D in rank positions, T5D '
             'rel. and mT5D in percent of AlexNet\'s; FR, mFR and mT5D are normalised by AlexNet '
             'over the 10 benchmark perturbations evaluated.')
NO_ALEXNET_NOTE = ('ImageNet-P: FR, mFR and mT5D are left out: the suites file gives no AlexNet '
                   'figures (alexnet_imagenet_p in configs/robustness/suites.py).')
ON_THE_FLY_NOTE = ('ImageNet-P was generated on the fly from the clean val set (simplified '
                   'generator, no video compression, other random draws): figures differ from '
                   'the released sequences.')
FP = 'perturbation/flip_probability'
T5D = 'perturbation/top5_distance'


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


def in_p_cells(suite: str, context: CellContext) -> List[dict]:
    """One cell per perturbation, each with its own evaluator (frames, not accuracies)."""
    from stl_mm.datasets.imagenet_p import GENERATED_PERTURBATIONS
    spec = context.specs[suite]
    on_the_fly = _on_the_fly(spec)
    missing = [p for p in context.selection['perturbations']
               if on_the_fly and p not in GENERATED_PERTURBATIONS]
    if missing:
        raise SystemExit(f'--in-p-on-the-fly cannot generate {missing} (it makes '
                         f'{", ".join(GENERATED_PERTURBATIONS)}); leave them out with '
                         '--perturbations, or evaluate the released sequences.')
    alexnet_reference(spec)  # a malformed normaliser stops the run before any evaluation
    loader = None if on_the_fly else 'LoadSequenceFrame'
    cells = []
    for name in in_p_names(suite, context.selection):
        perturbation = name[len(suite) + 1:]
        dataset = suite_dataset(context.cfg, spec, ('sequence', 'frame'), loader,
                                perturbation=perturbation)
        cells.append(checked_cell(context, f'ImageNet-P {perturbation}', suite, name, dataset,
                                  dict(type='PerturbationStability')))
    return cells


def _stability(suite: str, cells: Dict[str, dict]) -> Dict[str, Tuple[float, float]]:
    prefix = suite + '/'
    return {name[len(prefix):]: (cell['metrics'][FP], cell['metrics'][T5D])
            for name, cell in cells.items() if name.startswith(prefix)}


def alexnet_reference(spec: dict) -> Optional[Dict[str, Dict[str, float]]]:
    """AlexNet's figures from the suite's entry (``alexnet``), checked; ``None`` without."""
    try:
        return checked_alexnet_reference(spec.get('alexnet'),
                                         'alexnet_imagenet_p (the in-p suite\'s alexnet)')
    except ValueError as error:
        raise SystemExit(f'{error}\nFix it in the suites file (configs/robustness/suites.py) '
                         'or set it to None.')


def in_p_summary(suite: str, cells: Dict[str, dict], clean: Optional[float],
                 spec: dict) -> dict:
    """FP and T5D per perturbation, and FR, mFR and mT5D when the suite's entry gives AlexNet's
    figures."""
    return summarize_perturbations(_stability(suite, cells), alexnet_reference(spec))


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
    return ([IN_P_NOTE] + ([] if spec.get('alexnet') else [NO_ALEXNET_NOTE])
            + ([ON_THE_FLY_NOTE] if _on_the_fly(spec) else []))


def in_p_data(suite: str, spec: dict, on_the_fly: bool = False) -> dict:
    """The release's root, or the clean val root and seed of generated sequences."""
    root = spec['dataset'].get('data_root')
    if _on_the_fly(spec):
        return data_source(root, 'on_the_fly', seed=spec['dataset'].get('seed', 0))
    return data_source(root, 'files')
