"""ImageNet robustness suites: clean ImageNet-1K, ImageNet-C (published or on the fly),
ImageNet-A, ImageNet-R, ImageNet-P (published or on the fly) and shape bias, run as cells of
:class:`~stl_mm.engine.runners.RobustnessCellLoop`.

Cells are named ``in1k``, ``in-a``, ``in-r``, ``in-c/<corruption>/<severity>``,
``in-p/<perturbation>`` and ``shape-bias`` (the last two: :mod:`.imagenet_p` and
:mod:`.shape_bias`). Every
published ImageNet-C cell is checked against the clean val set before anything is evaluated:
the same class folders with the same number of images each.
"""
import copy
from collections import Counter
from typing import Collection, Dict, FrozenSet, List, Optional, Sequence, Union

from mmengine.config import Config, ConfigDict

from stl_mm.compat.imagecorruptions import ALL_CORRUPTIONS
from stl_mm.datasets.robustness import IMAGENET_WNIDS
from stl_mm.evaluation.metrics.robustness import summarize_robustness
from stl_mm.evaluation.reports import Table
from stl_mm.evaluation.robustness.cells import (check_cell, corruption_cells, count_note,
                                                parse_cell_name)
from stl_mm.evaluation.robustness.evaluate import finish, run_cells, suite_results
from stl_mm.evaluation.robustness.imagenet_p import (imagenet_p_cells, in_p_data, in_p_names,
                                                     in_p_notes, in_p_overview, in_p_summary,
                                                     in_p_tables)
from stl_mm.evaluation.robustness.shape_bias import (SHAPE_BIAS, cue_conflict_cells,
                                                     shape_bias_notes, shape_bias_overview,
                                                     shape_bias_summary_of, shape_bias_tables)
from stl_mm.evaluation.robustness.results import data_source
from stl_mm.utils import json_sha256

__all__ = ['SUITES', 'suite_pipeline', 'read_suite_specs', 'imagenet_cells', 'summarize',
           'suite_tables', 'evaluate_imagenet_robustness']

SUITES = ('in1k', 'in-c', 'in-a', 'in-r', 'in-p', SHAPE_BIAS)
SUITE_TITLES = {'in1k': 'ImageNet-1K (clean)', 'in-c': 'ImageNet-C', 'in-a': 'ImageNet-A',
                'in-r': 'ImageNet-R'}
CELL_META_KEYS = ('corruption', 'severity')
TOP1 = 'robustness/top1'
IN_C = 'in-c/'


def _transform_type(transform: dict) -> str:
    transform_type = transform.get('type', '')
    return transform_type if isinstance(transform_type, str) else transform_type.__name__


def suite_pipeline(model_pipeline: Sequence[dict],
                   corruption_pipeline: Sequence[dict] = ()) -> List[dict]:
    """The model's test pipeline, with the cell keys packed and optional corruption steps
    inserted right after image loading."""
    pipeline = [copy.deepcopy(dict(transform)) for transform in model_pipeline]
    pack = [t for t in pipeline if _transform_type(t).split('.')[-1].startswith('Pack')]
    if not pack:
        raise ValueError('The model config\'s test pipeline has no PackInputs step; the '
                         'robustness suites need one to carry corruption and severity.')
    from mmpretrain.datasets.transforms import PackInputs
    meta_keys = tuple(pack[-1].get('meta_keys', PackInputs.DEFAULT_META_KEYS))
    pack[-1]['meta_keys'] = meta_keys + tuple(k for k in CELL_META_KEYS if k not in meta_keys)
    if corruption_pipeline:
        loads = [i for i, t in enumerate(pipeline) if 'LoadImage' in _transform_type(t)]
        if not loads:
            raise ValueError('On-the-fly corruptions go right after image loading, but the '
                             'model\'s test pipeline has no LoadImageFromFile step.')
        position = loads[0] + 1
        pipeline[position:position] = [dict(t) for t in corruption_pipeline]
    return pipeline


def _on_the_fly_suites(on_the_fly: Union[bool, Collection[str]]) -> FrozenSet[str]:
    """``True`` (``--in-c-on-the-fly``) means ImageNet-C; otherwise the suites named."""
    if isinstance(on_the_fly, bool):
        return frozenset({'in-c'} if on_the_fly else ())
    unknown = [suite for suite in on_the_fly if suite not in ('in-c', 'in-p')]
    if unknown:
        raise ValueError(f'{unknown} cannot be made on the fly; in-c and in-p can.')
    return frozenset(on_the_fly)


def read_suite_specs(path: str, data_roots: Sequence[str],
                     on_the_fly: Union[bool, Collection[str]] = False) -> Dict[str, dict]:
    """Suite name -> {'dataset': ..., 'corruption_pipeline': ...} from the suites file, with
    ``SUITE=PATH`` data-root overrides; ``on_the_fly`` is ``True`` for ImageNet-C's on-the-fly
    entry, or the suites (``in-c``, ``in-p``) whose on-the-fly entries are read."""
    made = _on_the_fly_suites(on_the_fly)
    specs = Config.fromfile(path)
    names = {'in1k': 'in1k', 'in-c': 'in_c_on_the_fly' if 'in-c' in made else 'in_c',
             'in-a': 'in_a', 'in-r': 'in_r',
             'in-p': 'in_p_on_the_fly' if 'in-p' in made else 'in_p',
             SHAPE_BIAS: 'shape_bias'}
    suites = {}
    for suite, name in names.items():
        if name not in specs:
            raise KeyError(f'{path} does not define {name!r} (the {suite} suite).')
        suites[suite] = ConfigDict(copy.deepcopy(specs[name])).to_dict()
    for override in data_roots:
        suite, _, root = override.partition('=')
        if suite not in suites or not root:
            raise SystemExit(f'--data-root wants SUITE=PATH with SUITE in {list(SUITES)}, '
                             f'got {override!r}.')
        suites[suite]['dataset']['data_root'] = root
    return suites


def _suite_dataset(cfg: Config, spec: dict, **cell_arguments) -> dict:
    """The suite's dataset with the model's adapted test pipeline."""
    model_dataset = cfg.test_dataloader['dataset']
    if 'pipeline' not in model_dataset:
        raise ValueError('The model config\'s test_dataloader.dataset has no pipeline; use a '
                         'config with a plain (unwrapped) test dataset.')
    dataset = dict(copy.deepcopy(spec['dataset']), **cell_arguments)
    dataset['pipeline'] = suite_pipeline(model_dataset['pipeline'],
                                         spec.get('corruption_pipeline', ()))
    dataset.setdefault('test_mode', True)
    return dataset


def _class_counts(dataset: dict) -> Counter:
    """Images per wnid of a dataset config (scanned without its pipeline)."""
    from mmpretrain.registry import DATASETS
    labels = DATASETS.build(dict(dataset, pipeline=[])).get_gt_labels()
    return Counter(IMAGENET_WNIDS[int(label)] for label in labels)


def _clean_reference(specs: Dict[str, dict], allow_incomplete: bool) -> Optional[Counter]:
    try:
        return _class_counts(dict(specs['in1k']['dataset'], test_mode=True))
    except (FileNotFoundError, ValueError) as error:
        if allow_incomplete:
            return None
        raise SystemExit(
            f'ImageNet-C cells are checked against the clean val set, which cannot be read: '
            f'{error} Point the in1k suite at ImageNet val (--data-root in1k=PATH or '
            'imagenet_root in configs/robustness/suites.py), or pass --allow-incomplete to '
            'evaluate the cells unchecked.')


def imagenet_cells(cfg: Config, specs: Dict[str, dict], suites: Sequence[str],
                   corruptions: Sequence[str], severities: Sequence[int], on_the_fly: bool,
                   allow_incomplete: bool, pending: Sequence[str] = (),
                   perturbations: Sequence[str] = ()) -> List[dict]:
    """The cells of the chosen suites; published ImageNet-C cells in ``pending`` are checked
    against the clean set first (on-the-fly cells are made from it)."""
    cells = []
    for suite in suites:
        if suite == 'in-p':
            cells += imagenet_p_cells(cfg, suite, specs[suite],
                                      dict(perturbations=perturbations), pending)
            continue
        if suite == SHAPE_BIAS:
            cells += cue_conflict_cells(cfg, suite, specs[suite], pending)
            continue
        if suite != 'in-c':
            cells.append(dict(name=suite, dataset=_suite_dataset(cfg, specs[suite])))
            continue
        names = [IN_C + name for name in corruption_cells(corruptions, severities)]
        reference = None
        if not on_the_fly and any(name in pending for name in names):
            reference = _clean_reference(specs, allow_incomplete)
        for name in names:
            corruption, severity = parse_cell_name(name[len(IN_C):])
            dataset = _suite_dataset(cfg, specs[suite], corruptions=[corruption],
                                     severities=[severity])
            expected = None
            if reference is not None and name in pending:
                incomplete = check_cell(
                    f'ImageNet-C cell {corruption}/{severity} ({dataset["data_root"]})',
                    reference, _class_counts(dataset), 'class folders',
                    f'Re-extract {corruption}/{severity} of ImageNet-C, or leave it out with '
                    '--corruptions/--severities.', allow_incomplete)
                if incomplete:
                    print(f'[robustness] --allow-incomplete: {incomplete}')
                expected = sum(reference.values())
            cells.append(dict(name=name, dataset=dataset, expected_samples=expected))
    return cells


def summarize(cells: Dict[str, dict]) -> Dict[str, dict]:
    """Per-suite summaries from the recorded cells (clean top-1 feeds retention and rel. mCE)."""
    clean = cells.get('in1k', {}).get('metrics', {}).get(TOP1)
    summaries = {}
    in_p = {name: cell for name, cell in cells.items() if name.startswith('in-p/')}
    if in_p:
        summaries['in-p'] = in_p_summary('in-p', in_p)
    if SHAPE_BIAS in cells:
        summaries[SHAPE_BIAS] = shape_bias_summary_of(SHAPE_BIAS, cells)
    in_c = {parse_cell_name(name[len(IN_C):]): cell['metrics'][TOP1]
            for name, cell in cells.items() if name.startswith(IN_C)}
    if in_c:
        summaries['in-c'] = summarize_robustness(in_c, clean)
    for suite in ('in1k', 'in-a', 'in-r'):
        if suite in cells:
            summaries[suite] = {'top1': cells[suite]['metrics'][TOP1]}
            if clean and suite != 'in1k':
                summaries[suite]['retention'] = 100 * summaries[suite]['top1'] / clean
    return summaries


def _cell_value(cell: Optional[dict]):
    if cell is None:
        return '-'
    note = count_note(cell)
    return f'{cell["metrics"][TOP1]:.2f}{note}' if note else cell['metrics'][TOP1]


def suite_tables(cells: Dict[str, dict], summaries: Dict[str, dict]) -> List[Table]:
    """An overview table, then one table (two for ImageNet-C) per suite."""
    tables, overview_header, overview_row = [], [], []
    for suite in SUITES:
        if suite not in summaries:
            continue
        summary = summaries[suite]
        if suite in ('in-p', SHAPE_BIAS):
            tables_of, overview_of = {'in-p': (in_p_tables, in_p_overview),
                                      SHAPE_BIAS: (shape_bias_tables, shape_bias_overview)}[suite]
            own = {name: cell for name, cell in cells.items()
                   if name == suite or name.startswith(suite + '/')}
            tables += tables_of(suite, own, summary)
            for column, value in overview_of(suite, own, summary):
                overview_header.append(column)
                overview_row.append(value)
            continue
        if suite == 'in-c':
            keys = [parse_cell_name(name[len(IN_C):]) for name in cells if name.startswith(IN_C)]
            severities = sorted({severity for _, severity in keys})
            corruptions = sorted({corruption for corruption, _ in keys},
                                 key=lambda c: (ALL_CORRUPTIONS + (c,)).index(c))
            rows = [[c] + [_cell_value(cells.get(f'{IN_C}{c}/{s}')) for s in severities]
                    + [summary.get(f'top1/{c}', '-'), summary.get(f'CE/{c}', '-')]
                    for c in corruptions]
            tables.append(Table(SUITE_TITLES[suite], ['corruption', *[
                f'top-1 s{s}' for s in severities], 'mean top-1', 'CE'], rows))
            keys = [key for key in ('mCA', 'mCA_all', 'mCE', 'relative_mCE', 'retention',
                                    'retention_all') if key in summary]
            tables.append(Table('ImageNet-C summary', keys, [[summary[k] for k in keys]]))
            overview_header += ['IN-C mCA', 'IN-C mCE', 'retention']
            overview_row += [summary.get('mCA', '-'), summary.get('mCE', '-'),
                             summary.get('retention', '-')]
        else:
            keys = [key for key in ('top1', 'retention') if key in summary]
            value = _cell_value(cells[suite])
            tables.append(Table(SUITE_TITLES[suite], keys,
                                [[value] + [summary[key] for key in keys[1:]]]))
            overview_header.append({'in1k': 'clean', 'in-a': 'IN-A', 'in-r': 'IN-R'}[suite])
            overview_row.append(value)
    if overview_header:
        tables.insert(0, Table('Overview', overview_header, [overview_row]))
    return tables


def evaluate_imagenet_robustness(cfg: Config, config: str, checkpoint: str, out: str,
                                 suites: Sequence[str], corruptions: Sequence[str],
                                 severities: Sequence[int], specs: Dict[str, dict],
                                 on_the_fly: Union[bool, Collection[str]] = False,
                                 use_ema: bool = True,
                                 allow_incomplete: bool = False,
                                 perturbations: Sequence[str] = ()) -> dict:
    """Evaluate the chosen suites into the results file ``out`` (and ``out`` as ``.md``).

    Args:
        cfg: The resolved model config (its evaluator is replaced by ``RobustnessAccuracy``).
        config: Its file, recorded for the reader.
        checkpoint: The checkpoint (ours or official FAN/STL).
        out: The results JSON.
        suites: Any of :data:`SUITES`.
        corruptions: ImageNet-C corruptions.
        severities: ImageNet-C severities.
        specs: From :func:`read_suite_specs`.
        on_the_fly: ImageNet-C generated from the clean val set instead of read (``True``), or
            the suites so generated (``in-c``, ``in-p``); as given to :func:`read_suite_specs`.
        use_ema: Which weights of a checkpoint holding both.
        allow_incomplete: Evaluate ImageNet-C cells that do not match the clean set (the
            tables show their image count).
        perturbations: ImageNet-P perturbations (read or generated as ``specs['in-p']``
            says).

    Returns:
        The results file's content.
    """
    on_the_fly = 'in-c' in _on_the_fly_suites(on_the_fly)
    cfg = copy.deepcopy(cfg)
    cfg.test_evaluator = dict(type='RobustnessAccuracy')
    data = {suite: data_source(spec['dataset'].get('data_root'),
                               'on_the_fly' if suite == 'in-c' and on_the_fly else 'files')
            for suite, spec in specs.items()}
    if on_the_fly:
        data['in-c']['seed'] = specs['in-c']['dataset'].get('seed', 0)
    data['in-p'] = in_p_data('in-p', specs['in-p'])
    # The suites' datasets and corruption steps (suites.py after --data-root) decide the numbers.
    results = suite_results(out, cfg, config, checkpoint, 'pass another --out (or delete the '
                            'file)', suite='imagenet', data=data, use_ema=use_ema,
                            suites_sha256=json_sha256(specs))
    names = [s for s in suites if s not in ('in-c', 'in-p')] + (
        [IN_C + n for n in corruption_cells(corruptions, severities)] if 'in-c' in suites else []
    ) + (in_p_names('in-p', dict(perturbations=perturbations)) if 'in-p' in suites else [])
    cells = imagenet_cells(cfg, specs, suites, corruptions, severities, on_the_fly,
                           allow_incomplete, pending=results.pending(names),
                           perturbations=perturbations)
    recorded = run_cells(cfg, checkpoint, cells, results, use_ema)
    selected = {name: recorded[name] for name in names if name in recorded}
    # Retention and relative mCE need the clean top-1 even when in1k was not asked for.
    if 'in1k' in recorded:
        selected.setdefault('in1k', recorded['in1k'])
    summaries = summarize(selected)
    notes = ['Top-1, mCA, CE and retention in percent. mCE and relative mCE are '
             'normalised by AlexNet over the 15 benchmark corruptions evaluated.']
    selection = dict(suites=list(suites), corruptions=list(corruptions),
                     severities=list(severities))
    if 'in-p' in suites:
        selection['perturbations'] = list(perturbations)
        notes += in_p_notes('in-p', specs['in-p'])
    if SHAPE_BIAS in suites:
        notes += shape_bias_notes(SHAPE_BIAS, specs[SHAPE_BIAS])
    finish(results, summaries, selection, f'Robustness of `{checkpoint}`',
           suite_tables(selected, summaries), notes=notes)
    return results.data
