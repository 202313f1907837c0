"""Evaluate a classifier on the robustness suites: ImageNet-1K, ImageNet-C, ImageNet-A, ImageNet-R.

Each suite runs through mmengine's test loop, one cell at a time (a cell is one corruption at
one severity for ImageNet-C, the whole set otherwise). After every cell the results file is
rewritten, so an interrupted run resumes where it stopped: cells already in ``--out`` are
skipped. At the end one table per suite is printed and the results are written as JSON
(``--out``) and Markdown (same name, ``.md``): clean top-1, ImageNet-C mean corruption accuracy
(mCA), mCE and relative mCE (AlexNet-normalised, 15 benchmark corruptions), retention
(mCA / clean), ImageNet-A and ImageNet-R top-1.

Data roots live in configs/robustness/suites.py. Official FAN/STL checkpoints are accepted
directly (converted once into the work directory).

Examples:
    python tools/test_robustness.py CONFIG CHECKPOINT --suites in1k in-c in-a in-r
    python tools/test_robustness.py CONFIG CHECKPOINT --suites in-c --corruptions fog snow \\
        --severities 3 5 --out results/fan_b.json
    # 8 GPUs (same launcher as tools/dist_test.sh):
    python -m torch.distributed.run --nproc_per_node=8 tools/test_robustness.py CONFIG \\
        CHECKPOINT --launcher pytorch
"""
import argparse
import copy
import json
import os
import os.path as osp
import sys
import time
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch.distributed as torch_dist  # noqa: E402
from mmengine.config import Config, ConfigDict  # noqa: E402
from mmengine.runner import BaseLoop, TestLoop  # noqa: E402

import stl_mm  # noqa: E402,F401  (registers every module before configs are read)
from stl_mm.compat.imagecorruptions import (ALL_CORRUPTIONS, BENCHMARK_CORRUPTIONS,  # noqa: E402
                                            EXTRA_CORRUPTIONS, SEVERITIES)
from stl_mm.engine.runner_setup import (DictAction, add_launcher_arguments,  # noqa: E402
                                        build_runner, checkpoint_for_testing, close_distributed,
                                        parse_launcher_env, prepare_config)
from stl_mm.evaluation.metrics.robustness import summarize_robustness  # noqa: E402
from stl_mm.registry import register  # noqa: E402

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SUITES = ('in1k', 'in-c', 'in-a', 'in-r')
SUITE_TITLES = {'in1k': 'ImageNet-1K (clean)', 'in-c': 'ImageNet-C', 'in-a': 'ImageNet-A',
                'in-r': 'ImageNet-R'}
CELL_META_KEYS = ('corruption', 'severity')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='model config (its test pipeline and loader are used)')
    parser.add_argument('checkpoint', help='checkpoint file (ours or official FAN/STL)')
    parser.add_argument('--suites', nargs='+', choices=SUITES, default=list(SUITES))
    parser.add_argument('--corruptions', nargs='+', default=list(BENCHMARK_CORRUPTIONS),
                        help='ImageNet-C corruptions (default: the 15 of mCE; "all" adds '
                        f'{", ".join(EXTRA_CORRUPTIONS)})')
    parser.add_argument('--severities', nargs='+', type=int, default=list(SEVERITIES))
    parser.add_argument('--in-c-on-the-fly', action='store_true',
                        help='corrupt the clean val set at load time instead of reading the '
                        'published ImageNet-C')
    parser.add_argument('--out', help='results JSON (default: WORK_DIR/robustness.json); '
                        'a Markdown copy goes next to it')
    parser.add_argument('--work-dir', help='where logs and converted checkpoints go')
    parser.add_argument('--suite-config', default=osp.join(REPO_ROOT, 'configs', 'robustness',
                                                           'suites.py'),
                        help='file defining the suites and their data roots')
    parser.add_argument('--data-root', nargs='+', action='extend', default=[],
                        metavar='SUITE=PATH',
                        help='override a suite\'s data root for this run, e.g. in-c=/data/in-c')
    parser.add_argument('--no-ema', action='store_true',
                        help='for official checkpoints: use the raw weights, not the EMA ones')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override model config entries')
    add_launcher_arguments(parser)
    args = parser.parse_args(argv)
    if args.corruptions == ['all']:
        args.corruptions = list(ALL_CORRUPTIONS)
    unknown = sorted(set(args.corruptions) - set(ALL_CORRUPTIONS))
    if unknown:
        parser.error(f'unknown corruptions {unknown}; choose from {list(ALL_CORRUPTIONS)} '
                     'or "all"')
    if not set(args.severities) <= set(SEVERITIES):
        parser.error(f'severities must be in 1..5, got {args.severities}')
    return args


# ---------------------------------------------------------------- results file


def _is_main_process() -> bool:
    return not torch_dist.is_initialized() or torch_dist.get_rank() == 0


def load_results(path: str, checkpoint: str) -> dict:
    """The results recorded so far, refusing a file that belongs to another checkpoint."""
    if not osp.isfile(path):
        return {'checkpoint': osp.abspath(checkpoint), 'suites': {}}
    with open(path) as file:
        results = json.load(file)
    if results.get('checkpoint') != osp.abspath(checkpoint):
        raise SystemExit(f'{path} holds results of {results.get("checkpoint")}, not of '
                         f'{osp.abspath(checkpoint)}; pass another --out to start afresh.')
    return results


def write_json(path: str, results: dict) -> None:
    """Write atomically, so an interruption never leaves a truncated file to resume from."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    temporary = f'{path}.tmp'
    with open(temporary, 'w') as file:
        json.dump(results, file, indent=2)
    os.replace(temporary, path)


@register('LOOPS', codebases=('mmpretrain',))
class RobustnessTestLoop(BaseLoop):
    """Run mmengine's ``TestLoop`` over the cells of one suite, recording each as it finishes.

    Args:
        runner: The runner.
        dataloader: Dataloader config of the suite; each cell updates its ``dataset``.
        evaluator: Evaluator config (a fresh evaluator per cell).
        suite: Suite name, the key in the results file.
        cells: ``[{'key': str, 'dataset': dict of dataset arguments}]``, still to run.
        results_file: JSON file the finished cells are added to (by rank 0).
        checkpoint: The checkpoint evaluated (recorded in the results file).
        fp16: Run the model in fp16, as ``TestLoop`` does.
    """

    def __init__(self, runner, dataloader: dict, evaluator, suite: str, cells: List[dict],
                 results_file: str, checkpoint: str, fp16: bool = False) -> None:
        if not cells:
            raise ValueError('RobustnessTestLoop got no cells to run.')
        self._dataloader_cfg = copy.deepcopy(dataloader)
        self._evaluator_cfg = evaluator
        self.suite, self.cells, self.results_file = suite, list(cells), results_file
        self.checkpoint, self.fp16 = checkpoint, fp16
        super().__init__(runner, self._cell_dataloader(self.cells[0]))

    def _cell_dataloader(self, cell: dict) -> dict:
        dataloader = copy.deepcopy(self._dataloader_cfg)
        dataloader['dataset'].update(cell['dataset'])
        return dataloader

    def run(self) -> Dict[str, dict]:
        """Evaluate every cell; returns the metrics of each by cell key."""
        all_metrics = {}
        for index, cell in enumerate(self.cells):
            dataloader = self.dataloader if index == 0 else self._cell_dataloader(cell)
            cell_loop = TestLoop(self.runner, dataloader, self._evaluator_cfg, self.fp16)
            # Hooks (e.g. the logger) read the current dataloader through runner.test_loop.
            self.dataloader = cell_loop.dataloader
            metrics = cell_loop.run()
            all_metrics[cell['key']] = metrics
            if _is_main_process():
                results = load_results(self.results_file, self.checkpoint)
                suite = results['suites'].setdefault(self.suite, {'cells': {}})
                suite['cells'][cell['key']] = {
                    'top1': float(metrics['robustness/top1']),
                    'num_samples': len(cell_loop.dataloader.dataset)}
                write_json(self.results_file, results)
        return all_metrics


# ---------------------------------------------------------------- suites


def suite_cells(suite: str, corruptions: Sequence[str],
                severities: Sequence[int]) -> List[dict]:
    """Cells of a suite with the dataset arguments that select each."""
    if suite != 'in-c':
        return [{'key': 'all', 'dataset': {}}]
    return [{'key': f'{corruption}/{severity}',
             'dataset': {'corruptions': [corruption], 'severities': [severity]}}
            for corruption in corruptions for severity in severities]


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


def suite_dataloader(cfg: Config, suite_spec: dict) -> dict:
    """The model's test dataloader with the suite's dataset and the adapted pipeline."""
    dataloader = copy.deepcopy(cfg.test_dataloader)
    model_dataset = dataloader['dataset']
    if 'pipeline' not in model_dataset:
        raise ValueError('The model config\'s test_dataloader.dataset has no pipeline; use a '
                         'config with a plain (unwrapped) test dataset.')
    dataset = dict(copy.deepcopy(suite_spec['dataset']))
    dataset['pipeline'] = suite_pipeline(model_dataset['pipeline'],
                                         suite_spec.get('corruption_pipeline', ()))
    dataset.setdefault('test_mode', True)
    dataloader['dataset'] = dataset
    return dataloader


def read_suite_specs(path: str, data_roots: Sequence[str], on_the_fly: bool) -> Dict[str, dict]:
    """Suite name -> {'dataset': ..., 'corruption_pipeline': ...} from the suites file."""
    specs = Config.fromfile(path)
    names = {'in1k': 'in1k', 'in-c': 'in_c_on_the_fly' if on_the_fly else 'in_c',
             'in-a': 'in_a', 'in-r': 'in_r'}
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


# ---------------------------------------------------------------- tables


def summarize(results: dict) -> Dict[str, dict]:
    """Per-suite summaries from the recorded cells (clean top-1 feeds retention and rel. mCE)."""
    suites = results['suites']
    clean = suites.get('in1k', {}).get('cells', {}).get('all', {}).get('top1')
    summaries = {}
    for suite, record in suites.items():
        cells = record.get('cells', {})
        if suite == 'in-c':
            accuracies = {(key.split('/')[0], int(key.split('/')[1])): cell['top1']
                          for key, cell in cells.items()}
            summaries[suite] = summarize_robustness(accuracies, clean) if accuracies else {}
        elif 'all' in cells:
            summaries[suite] = {'top1': cells['all']['top1']}
            if clean and suite != 'in1k':
                summaries[suite]['retention'] = 100 * cells['all']['top1'] / clean
    return summaries


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    def fmt(value) -> str:
        return f'{value:.2f}' if isinstance(value, float) else str(value)
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(fmt(value) for value in row) + ' |' for row in rows]
    return '\n'.join(lines)


def suite_tables(results: dict) -> Dict[str, str]:
    """A Markdown table per suite, plus an overview keyed ``overview``."""
    summaries = summarize(results)
    tables = {}
    overview_header, overview_row = [], []
    for suite in SUITES:
        if suite not in summaries:
            continue
        summary = summaries[suite]
        if suite == 'in-c':
            cells = results['suites'][suite]['cells']
            severities = sorted({int(key.split('/')[1]) for key in cells})
            corruptions = sorted({key.split('/')[0] for key in cells},
                                 key=lambda c: (ALL_CORRUPTIONS + (c,)).index(c))
            rows = []
            for corruption in corruptions:
                row = [corruption]
                row += [cells.get(f'{corruption}/{s}', {}).get('top1', '-') for s in severities]
                row += [summary.get(f'top1/{corruption}', '-'),
                        summary.get(f'CE/{corruption}', '-')]
                rows.append(row)
            table = _markdown_table(['corruption', *[f'top-1 s{s}' for s in severities],
                                     'mean top-1', 'CE'], rows)
            keys = ('mCA', 'mCA_all', 'mCE', 'relative_mCE', 'retention', 'retention_all')
            table += '\n\n' + _markdown_table(
                [key for key in keys if key in summary], [[summary[k] for k in keys
                                                           if k in summary]])
            overview_header += ['IN-C mCA', 'IN-C mCE', 'retention']
            overview_row += [summary.get('mCA', '-'), summary.get('mCE', '-'),
                             summary.get('retention', '-')]
        else:
            keys = [key for key in ('top1', 'retention') if key in summary]
            table = _markdown_table(keys, [[summary[key] for key in keys]])
            overview_header.append({'in1k': 'clean', 'in-a': 'IN-A', 'in-r': 'IN-R'}[suite])
            overview_row.append(summary['top1'])
        tables[suite] = table
    if overview_header:
        tables['overview'] = _markdown_table(overview_header, [overview_row])
    return tables


def write_reports(out: str, results: dict, config: str) -> str:
    """Add the summaries to the JSON, write the Markdown file; returns the Markdown text."""
    results['summary'] = summarize(results)
    results['config'] = osp.abspath(config)
    write_json(out, results)
    tables = suite_tables(results)
    sections = [f'# Robustness of `{osp.basename(results["checkpoint"])}`',
                '', 'Top-1, mCA, CE and retention in percent. mCE and relative mCE are '
                'normalised by AlexNet over the 15 benchmark corruptions evaluated.']
    if 'overview' in tables:
        sections += ['', '## Overview', '', tables['overview']]
    for suite in SUITES:
        if suite in tables:
            sections += ['', f'## {SUITE_TITLES[suite]}', '', tables[suite]]
    markdown = '\n'.join(sections) + '\n'
    with open(osp.splitext(out)[0] + '.md', 'w') as file:
        file.write(markdown)
    return markdown


# ---------------------------------------------------------------- main


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    parse_launcher_env(args.local_rank)
    base_cfg = prepare_config(args.config, args.work_dir, args.cfg_options, args.launcher)
    out = args.out or osp.join(base_cfg.work_dir, 'robustness.json')
    specs = read_suite_specs(args.suite_config, args.data_root, args.in_c_on_the_fly)
    checkpoint = checkpoint_for_testing(args.checkpoint, base_cfg.work_dir, not args.no_ema)
    results = load_results(out, args.checkpoint)
    if _is_main_process() and not osp.isfile(out):
        write_json(out, results)
    timestamp = time.strftime('%Y%m%d_%H%M%S', time.localtime())
    for suite in args.suites:
        done = results['suites'].get(suite, {}).get('cells', {})
        cells = [cell for cell in suite_cells(suite, args.corruptions, args.severities)
                 if cell['key'] not in done]
        if not cells:
            print(f'[test_robustness] {suite}: every cell is already in {out}; skipped.')
            continue
        cfg = copy.deepcopy(base_cfg)
        cfg.load_from = checkpoint
        cfg.experiment_name = f'robustness_{suite}_{timestamp}'
        cfg.test_dataloader = suite_dataloader(base_cfg, specs[suite])
        cfg.test_evaluator = dict(type='RobustnessAccuracy')
        cfg.test_cfg = dict(type='RobustnessTestLoop', suite=suite, cells=cells,
                            results_file=out, checkpoint=args.checkpoint,
                            fp16=bool((base_cfg.get('test_cfg') or {}).get('fp16', False)))
        build_runner(cfg).test()
        if torch_dist.is_initialized():
            torch_dist.barrier()
        results = load_results(out, args.checkpoint)
    if _is_main_process():
        print(write_reports(out, results, args.config))
        print(f'[test_robustness] results: {out} and {osp.splitext(out)[0]}.md')
    return results


if __name__ == '__main__':
    main()
    close_distributed()
