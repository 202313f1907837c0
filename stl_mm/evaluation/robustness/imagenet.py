"""The classification robustness battery: clean ImageNet-1K, ImageNet-C (published or on the
fly), ImageNet-A, -R, -V2, -Sketch and -ReaL, run as cells of
:class:`~stl_mm.engine.runners.RobustnessCellLoop` into one results file.

Every suite is one entry of :data:`SUITES`: its suites-file entry, how its cells are named and
built, and how its figures are summarised, tabulated and shown in the overview. Cells are named
by their suite (``in1k``, ``in-a``, ``in-r``, ``in-sketch``, ``in-real``) or below it
(``in-c/<corruption>/<severity>``, ``in-v2/<variant>``). Every published ImageNet-C cell is
checked against the clean val set before anything is evaluated (the same class folders with
the same number of images each); every other pending cell's data is read once up front, so a
missing or malformed tree stops the run before the first cell, not after hours.

A suite added to :data:`SUITES` (with its entry in ``configs/robustness/suites.py``) runs,
resumes, is fingerprinted, tabulated and put on the model card like the others.
"""
import copy
import datetime
import os.path as osp
from collections import Counter
from typing import (Any, Callable, Collection, Dict, FrozenSet, List, NamedTuple, Optional,
                    Sequence, Tuple, Union)

from mmengine.config import Config, ConfigDict

from stl_mm.compat.imagecorruptions import ALL_CORRUPTIONS, BENCHMARK_CORRUPTIONS, SEVERITIES
from stl_mm.datasets.robustness import IMAGENET_V2_VARIANTS, IMAGENET_WNIDS
from stl_mm.evaluation.metrics.robustness import summarize_robustness
from stl_mm.evaluation.reports import Table, write_json
from stl_mm.evaluation.robustness.cells import (check_cell, corruption_cells, count_note,
                                                parse_cell_name)
from stl_mm.evaluation.robustness.evaluate import finish, run_cells, suite_results
from stl_mm.evaluation.robustness.imagenet_p import (in_p_cells, in_p_data, in_p_names,
                                                     in_p_notes, in_p_overview, in_p_summary,
                                                     in_p_tables)
from stl_mm.evaluation.robustness.results import data_source
from stl_mm.evaluation.robustness.shape_bias import (shape_bias_cells, shape_bias_notes,
                                                     shape_bias_overview, shape_bias_summary_of,
                                                     shape_bias_tables)
from stl_mm.evaluation.robustness.suite_cells import (CellContext, checked_cell, scan_dataset,
                                                      suite_dataset, suite_pipeline)
from stl_mm.utils import file_sha256, json_sha256

__all__ = ['Suite', 'CellContext', 'SUITES', 'MODEL_CARD_FORMAT', 'suite_pipeline',
           'suite_dataset', 'checked_cell', 'read_suite_specs', 'imagenet_cells', 'summarize',
           'suite_tables', 'model_card', 'evaluate_imagenet_robustness']

TOP1 = 'robustness/top1'
REAL_TOP1 = 'robustness/real_top1'
IN_C = 'in-c/'
IN_V2 = 'in-v2/'
MODEL_CARD_FORMAT = 'stl_mm.model_card/1'


def _suite_cells(suite: str, cells: Dict[str, dict]) -> Dict[str, dict]:
    """The cells of one suite: the cell named by it, or those below it (``suite/...``)."""
    return {name: cell for name, cell in cells.items()
            if name == suite or name.startswith(suite + '/')}


def _cell_value(cell: Optional[dict], key: str = TOP1):
    if cell is None:
        return '-'
    note = count_note(cell)
    return f'{cell["metrics"][key]:.2f}{note}' if note else cell['metrics'][key]


# The hooks of a plain suite: one cell, one dataset, top-1 (and retention against clean).

def _one_cell(suite: str, selection: Dict[str, Any]) -> List[str]:
    return [suite]


def _suite_cell(context: CellContext, suite: str, name: str, **cell_arguments) -> dict:
    """A cell on the suite's dataset with ``cell_arguments``, its data checked when pending."""
    return checked_cell(context, SUITES[suite].title, suite, name,
                        suite_dataset(context.cfg, context.specs[suite], **cell_arguments))


def _dataset_cells(suite: str, context: CellContext) -> List[dict]:
    return [_suite_cell(context, suite, suite)]


def _top1_summary(suite: str, cells: Dict[str, dict], clean: Optional[float],
                  spec: dict) -> dict:
    summary = {'top1': cells[suite]['metrics'][TOP1]}
    if clean and suite != 'in1k':
        summary['retention'] = 100 * summary['top1'] / clean
    return summary


def _top1_tables(suite: str, cells: Dict[str, dict], summary: dict) -> List[Table]:
    keys = [key for key in ('top1', 'retention') if key in summary]
    return [Table(SUITES[suite].title, keys,
                  [[_cell_value(cells[suite])] + [summary[key] for key in keys[1:]]])]


def _top1_overview(suite: str, cells: Dict[str, dict], summary: dict) -> List[Tuple[str, Any]]:
    return [(SUITES[suite].column, _cell_value(cells[suite]))]


def _files(suite: str, spec: dict, on_the_fly: bool) -> dict:
    return data_source(spec['dataset'].get('data_root'), 'files')


def _no_notes(suite: str, spec: dict) -> List[str]:
    return []


class Suite(NamedTuple):
    """One suite of the battery. Each hook gets the suite's name first.

    Attributes:
        title: Heading of its table (and name in messages).
        column: Its column in the overview table.
        spec: Its entry in the suites file.
        cell_names: ``(suite, selection) -> names`` of its cells for this run.
        build_cells: ``(suite, CellContext) -> [{'name', 'dataset', 'expected_samples'}]``.
        summarize: ``(suite, its recorded cells, clean top-1 or None, spec) -> summary``.
        tables: ``(suite, its cells, summary) -> [Table]``.
        overview: ``(suite, its cells, summary) -> [(column, value)]``.
        data: ``(suite, spec, on_the_fly) -> how the results file records its data``.
        notes: ``(suite, spec) -> lines`` above the tables when the suite ran.
        on_the_fly_spec: The suites-file entry used when its data is made at load time
            (``--in-c-on-the-fly``), if it can be.
    """
    title: str
    column: str
    spec: str
    cell_names: Callable[[str, Dict[str, Any]], List[str]] = _one_cell
    build_cells: Callable[[str, CellContext], List[dict]] = _dataset_cells
    summarize: Callable[[str, Dict[str, dict], Optional[float], dict], dict] = _top1_summary
    tables: Callable[[str, Dict[str, dict], dict], List[Table]] = _top1_tables
    overview: Callable[[str, Dict[str, dict], dict], List[Tuple[str, Any]]] = _top1_overview
    data: Callable[[str, dict, bool], dict] = _files
    notes: Callable[[str, dict], List[str]] = _no_notes
    on_the_fly_spec: Optional[str] = None


# ImageNet-C: one cell per (corruption, severity), checked against the clean set.

def _class_counts(dataset: dict) -> Counter:
    """Images per wnid of a dataset config (scanned without its pipeline)."""
    return Counter(IMAGENET_WNIDS[int(label)] for label in scan_dataset(dataset).get_gt_labels())


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


def _in_c_names(suite: str, selection: Dict[str, Any]) -> List[str]:
    return [IN_C + name for name in corruption_cells(selection['corruptions'],
                                                     selection['severities'])]


def _in_c_cells(suite: str, context: CellContext) -> List[dict]:
    names = _in_c_names(suite, context.selection)
    reference = None
    if suite not in context.on_the_fly and any(name in context.pending for name in names):
        reference = _clean_reference(context.specs, context.allow_incomplete)
    cells = []
    for name in names:
        corruption, severity = parse_cell_name(name[len(IN_C):])
        dataset = suite_dataset(context.cfg, context.specs[suite], corruptions=[corruption],
                                severities=[severity])
        expected = None
        if reference is not None and name in context.pending:
            incomplete = check_cell(
                f'ImageNet-C cell {corruption}/{severity} ({dataset["data_root"]})',
                reference, _class_counts(dataset), 'class folders',
                f'Re-extract {corruption}/{severity} of ImageNet-C, or leave it out with '
                '--corruptions/--severities.', context.allow_incomplete)
            if incomplete:
                print(f'[robustness] --allow-incomplete: {incomplete}')
            expected = sum(reference.values())
        cells.append(dict(name=name, dataset=dataset, expected_samples=expected))
    return cells


def _in_c_summary(suite: str, cells: Dict[str, dict], clean: Optional[float],
                  spec: dict) -> dict:
    return summarize_robustness({parse_cell_name(name[len(IN_C):]): cell['metrics'][TOP1]
                                 for name, cell in cells.items()}, clean)


def _in_c_tables(suite: str, cells: Dict[str, dict], summary: dict) -> List[Table]:
    keys = [parse_cell_name(name[len(IN_C):]) for name in cells]
    severities = sorted({severity for _, severity in keys})
    corruptions = sorted({corruption for corruption, _ in keys},
                         key=lambda c: (ALL_CORRUPTIONS + (c,)).index(c))
    rows = [[c] + [_cell_value(cells.get(f'{IN_C}{c}/{s}')) for s in severities]
            + [summary.get(f'top1/{c}', '-'), summary.get(f'CE/{c}', '-')] for c in corruptions]
    keys = [key for key in ('mCA', 'mCA_all', 'mCE', 'relative_mCE', 'retention',
                            'retention_all') if key in summary]
    return [Table(SUITES[suite].title,
                  ['corruption', *[f'top-1 s{s}' for s in severities], 'mean top-1', 'CE'], rows),
            Table('ImageNet-C summary', keys, [[summary[k] for k in keys]])]


def _in_c_overview(suite: str, cells: Dict[str, dict], summary: dict) -> List[Tuple[str, Any]]:
    return [('IN-C mCA', summary.get('mCA', '-')), ('IN-C mCE', summary.get('mCE', '-')),
            ('retention', summary.get('retention', '-'))]


def _in_c_data(suite: str, spec: dict, on_the_fly: bool) -> dict:
    if on_the_fly:
        return data_source(spec['dataset'].get('data_root'), 'on_the_fly',
                           seed=spec['dataset'].get('seed', 0))
    return _files(suite, spec, on_the_fly)


# ImageNet-V2: one cell per variant.

V2_COLUMNS = {'matched-frequency': 'IN-V2', 'threshold-0.7': 'IN-V2 t0.7',
              'top-images': 'IN-V2 top'}


def _v2_names(suite: str, selection: Dict[str, Any]) -> List[str]:
    return [IN_V2 + variant for variant in selection['v2_variants']]


def _v2_cells(suite: str, context: CellContext) -> List[dict]:
    return [_suite_cell(context, suite, name, variant=name[len(IN_V2):])
            for name in _v2_names(suite, context.selection)]


def _v2_summary(suite: str, cells: Dict[str, dict], clean: Optional[float],
                spec: dict) -> dict:
    summary = {}
    for name, cell in cells.items():
        variant = name[len(IN_V2):]
        summary[f'top1/{variant}'] = cell['metrics'][TOP1]
        if clean:
            summary[f'retention/{variant}'] = 100 * cell['metrics'][TOP1] / clean
    return summary


def _v2_tables(suite: str, cells: Dict[str, dict], summary: dict) -> List[Table]:
    variants = [variant for variant in IMAGENET_V2_VARIANTS if IN_V2 + variant in cells]
    header = ['variant', 'top1'] + (['retention'] if f'retention/{variants[0]}' in summary
                                    else [])
    rows = [[variant, _cell_value(cells[IN_V2 + variant])] +
            ([summary[f'retention/{variant}']] if len(header) == 3 else [])
            for variant in variants]
    return [Table(SUITES[suite].title, header, rows)]


def _v2_overview(suite: str, cells: Dict[str, dict], summary: dict) -> List[Tuple[str, Any]]:
    return [(V2_COLUMNS[variant], _cell_value(cells[IN_V2 + variant]))
            for variant in IMAGENET_V2_VARIANTS if IN_V2 + variant in cells]


# ImageNet-ReaL: one cell; ReaL top-1 and the original top-1 on the same images.

def _real_summary(suite: str, cells: Dict[str, dict], clean: Optional[float],
                  spec: dict) -> dict:
    cell = cells[suite]
    return {'real_top1': cell['metrics'][REAL_TOP1], 'top1': cell['metrics'][TOP1],
            'images': cell['num_samples']}


def _real_tables(suite: str, cells: Dict[str, dict], summary: dict) -> List[Table]:
    return [Table(SUITES[suite].title, ['ReaL top-1', 'original top-1', 'images'],
                  [[summary['real_top1'], summary['top1'], summary['images']]])]


def _real_overview(suite: str, cells: Dict[str, dict], summary: dict) -> List[Tuple[str, Any]]:
    return [(SUITES[suite].column, summary['real_top1'])]


def _real_notes(suite: str, spec: dict) -> List[str]:
    return ['ImageNet-ReaL: top-1 in the reassessed label set, and the original top-1, on the '
            'images ReaL labels (those with an empty set left out).']


def _masked_notes(suite: str, spec: dict) -> List[str]:
    return [f'{SUITES[suite].title}: the 1000-way output restricted to its 200 classes.']


def _real_data(suite: str, spec: dict, on_the_fly: bool) -> dict:
    """The val root and real.json by content (absent: None, and the suite cannot run)."""
    dataset = spec['dataset']
    labels = dataset.get('real_json', 'real.json')
    labels = labels if osp.isabs(labels) else osp.join(dataset.get('data_root', ''), labels)
    return data_source(dataset.get('data_root'), 'files', real_json=osp.abspath(labels),
                       real_json_sha256=file_sha256(labels) if osp.isfile(labels) else None)


#: The suites, in the order of the tables and the overview.
SUITES: Dict[str, Suite] = {
    'in1k': Suite('ImageNet-1K (clean)', 'clean', 'in1k'),
    'in-c': Suite('ImageNet-C', 'IN-C', 'in_c', _in_c_names, _in_c_cells, _in_c_summary,
                  _in_c_tables, _in_c_overview, _in_c_data, on_the_fly_spec='in_c_on_the_fly'),
    'in-a': Suite('ImageNet-A', 'IN-A', 'in_a', notes=_masked_notes),
    'in-r': Suite('ImageNet-R', 'IN-R', 'in_r', notes=_masked_notes),
    'in-v2': Suite('ImageNet-V2', 'IN-V2', 'in_v2', _v2_names, _v2_cells, _v2_summary,
                   _v2_tables, _v2_overview),
    'in-sketch': Suite('ImageNet-Sketch', 'IN-Sketch', 'in_sketch'),
    'in-real': Suite('ImageNet-ReaL', 'ReaL', 'in_real', summarize=_real_summary,
                     tables=_real_tables, overview=_real_overview, data=_real_data,
                     notes=_real_notes),
    'in-p': Suite('ImageNet-P', 'IN-P', 'in_p', in_p_names, in_p_cells, in_p_summary,
                  in_p_tables, in_p_overview, in_p_data, in_p_notes,
                  on_the_fly_spec='in_p_on_the_fly'),
    'shape-bias': Suite('Shape bias', 'shape bias', 'shape_bias', build_cells=shape_bias_cells,
                        summarize=shape_bias_summary_of, tables=shape_bias_tables,
                        overview=shape_bias_overview, notes=shape_bias_notes),
}


def _on_the_fly_suites(on_the_fly: Union[bool, Collection[str]]) -> FrozenSet[str]:
    """``True`` (``--in-c-on-the-fly``) means ImageNet-C; otherwise the suites named."""
    if isinstance(on_the_fly, bool):
        return frozenset({'in-c'} if on_the_fly else ())
    unknown = [suite for suite in on_the_fly if not (suite in SUITES and
                                                     SUITES[suite].on_the_fly_spec)]
    if unknown:
        raise ValueError(f'{unknown} cannot be made on the fly; these can: '
                         f'{[s for s, entry in SUITES.items() if entry.on_the_fly_spec]}.')
    return frozenset(on_the_fly)


def read_suite_specs(path: str, data_roots: Sequence[str],
                     on_the_fly: Union[bool, Collection[str]] = False) -> Dict[str, dict]:
    """Suite name -> {'dataset': ..., 'corruption_pipeline': ...} from the suites file, with
    ``SUITE=PATH`` data-root overrides.

    Args:
        path: The suites file.
        data_roots: ``SUITE=PATH`` overrides.
        on_the_fly: ``True`` reads ImageNet-C's on-the-fly entry; a collection names every
            suite whose on-the-fly entry is read.
    """
    made = _on_the_fly_suites(on_the_fly)
    specs = Config.fromfile(path)
    suites = {}
    for suite, entry in SUITES.items():
        name = entry.on_the_fly_spec if suite in made else entry.spec
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


def imagenet_cells(context: CellContext) -> List[dict]:
    """The cells of the selected suites, in order; pending ones have their data checked."""
    return [cell for suite in context.selection['suites']
            for cell in SUITES[suite].build_cells(suite, context)]


def summarize(cells: Dict[str, dict], specs: Dict[str, dict]) -> Dict[str, dict]:
    """Per-suite summaries from the recorded cells (clean top-1 feeds retention and rel. mCE)
    and the suites' entries (from :func:`read_suite_specs`)."""
    clean = cells.get('in1k', {}).get('metrics', {}).get(TOP1)
    summaries = {}
    for suite, entry in SUITES.items():
        own = _suite_cells(suite, cells)
        if own:
            summaries[suite] = entry.summarize(suite, own, clean, specs[suite])
    return summaries


def suite_tables(cells: Dict[str, dict], summaries: Dict[str, dict]) -> List[Table]:
    """An overview table, then each suite's tables."""
    tables, overview = [], []
    for suite, entry in SUITES.items():
        if suite in summaries:
            own = _suite_cells(suite, cells)
            tables += entry.tables(suite, own, summaries[suite])
            overview += entry.overview(suite, own, summaries[suite])
    if overview:
        tables.insert(0, Table('Overview', [column for column, _ in overview],
                               [[value for _, value in overview]]))
    return tables


def _versions() -> Dict[str, str]:
    import mmengine
    import mmpretrain
    import torch

    import stl_mm
    return dict(stl_mm=stl_mm.__version__, torch=torch.__version__,
                mmpretrain=mmpretrain.__version__, mmengine=mmengine.__version__)


def model_card(results: dict, path: Optional[str] = None) -> dict:
    """A machine-readable card of one evaluation, made from its results file alone.

    In the spirit of RobustBench's model entries: the model and checkpoint (path and SHA-256),
    ``clean_acc`` (ImageNet-1K top-1), ``corruptions_acc`` (ImageNet-C mCA over the benchmark
    corruptions and severities evaluated; RobustBench uses all 15 at severities 1..5) and
    ``corruptions_mce``, with ``corruptions_complete`` telling whether that is all 15 at all five
    severities (comparable with published figures), then every suite's summary, the data each
    came from and the selection. Figures are percent (null when the suite did not run); ``software``
    and ``date`` are those of writing the card.

    Args:
        results: The results file's content.
        path: The results file, recorded for the reader.
    """
    about, inputs = results.get('about', {}), results['inputs']
    summary, selection = results.get('summary', {}), results.get('selection', {})
    config = about.get('config')
    complete = 'in-c' in summary and set(BENCHMARK_CORRUPTIONS) <= set(
        selection.get('corruptions', ())) and set(selection.get('severities', ())) == set(
            SEVERITIES)
    return {
        'format': MODEL_CARD_FORMAT,
        'model': {'name': osp.splitext(osp.basename(config))[0] if config else None,
                  'config': config, 'config_sha256': inputs.get('config_sha256')},
        'checkpoint': {'path': about.get('checkpoint'),
                       'sha256': inputs.get('checkpoint_sha256'),
                       'use_ema': inputs.get('use_ema')},
        'dataset': 'imagenet',
        'clean_acc': summary.get('in1k', {}).get('top1'),
        'corruptions_acc': summary.get('in-c', {}).get('mCA'),
        'corruptions_mce': summary.get('in-c', {}).get('mCE'),
        'corruptions_complete': complete,
        'suites': {suite: dict(title=SUITES[suite].title, **figures)
                   for suite, figures in summary.items() if suite in SUITES},
        'selection': selection,
        'data': {suite: inputs.get('data', {}).get(suite) for suite in summary},
        'results_file': None if path is None else osp.abspath(path),
        'software': _versions(),
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    }


def evaluate_imagenet_robustness(cfg: Config, config: str, checkpoint: str, out: str,
                                 suites: Sequence[str], corruptions: Sequence[str],
                                 severities: Sequence[int], specs: Dict[str, dict],
                                 on_the_fly: Union[bool, Collection[str]] = False,
                                 use_ema: bool = True,
                                 allow_incomplete: bool = False,
                                 v2_variants: Sequence[str] = tuple(IMAGENET_V2_VARIANTS),
                                 **selection) -> dict:
    """Evaluate the chosen suites into the results file ``out``, with ``out`` as ``.md`` and the
    model card as ``.card.json`` beside it.

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
            the suites so generated; as given to :func:`read_suite_specs`.
        use_ema: Which weights of a checkpoint holding both.
        allow_incomplete: Evaluate ImageNet-C cells that do not match the clean set (the
            tables show their image count).
        v2_variants: ImageNet-V2 variants (keys of
            :data:`~stl_mm.datasets.robustness.IMAGENET_V2_VARIANTS`).
        **selection: The choices of added suites, passed to their hooks and recorded.

    Returns:
        The results file's content.
    """
    unknown = [suite for suite in suites if suite not in SUITES]
    if unknown:
        raise ValueError(f'Unknown suites {unknown}; choose from {list(SUITES)}.')
    cfg = copy.deepcopy(cfg)
    cfg.test_evaluator = dict(type='RobustnessAccuracy')
    made = _on_the_fly_suites(on_the_fly)
    data = {suite: SUITES[suite].data(suite, spec, suite in made)
            for suite, spec in specs.items()}
    # The suites' datasets and corruption steps (suites.py after --data-root) decide the numbers.
    results = suite_results(out, cfg, config, checkpoint, 'pass another --out (or delete the '
                            'file)', suite='imagenet', data=data, use_ema=use_ema,
                            suites_sha256=json_sha256(specs))
    selection = dict(suites=list(suites), corruptions=list(corruptions),
                     severities=list(severities), v2_variants=list(v2_variants), **selection)
    names = [name for suite in suites for name in SUITES[suite].cell_names(suite, selection)]
    cells = imagenet_cells(CellContext(cfg, specs, selection, made, allow_incomplete,
                                       results.pending(names)))
    recorded = run_cells(cfg, checkpoint, cells, results, use_ema)
    selected = {name: recorded[name] for name in names if name in recorded}
    # Retention and relative mCE need the clean top-1 even when in1k was not asked for.
    if 'in1k' in recorded:
        selected.setdefault('in1k', recorded['in1k'])
    summaries = summarize(selected, specs)

    def write_card(base: str) -> None:
        write_json(model_card(results.data, results.path), base + '.card.json')

    finish(results, summaries, selection, f'Robustness of `{checkpoint}`',
           suite_tables(selected, summaries), extra_outputs=write_card,
           notes=['Top-1, mCA, CE and retention in percent. mCE and relative mCE are '
                  'normalised by AlexNet over the 15 benchmark corruptions evaluated.'] +
           [note for suite in SUITES if suite in summaries
            for note in SUITES[suite].notes(suite, specs[suite])])
    return results.data
