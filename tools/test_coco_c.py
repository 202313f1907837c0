"""COCO-C robustness of a detector: box and mask mAP under common corruptions.

Every cell (corruption, severity) evaluates the config's test set with mmdet's ``Corrupt``
transform inserted right after ``LoadImageFromFile``, so the images are corrupted on the fly at
their original resolution, as the offline COCO-C images are. One extra ``clean`` cell gives the
reference. The model is built and loaded once; each cell runs its own test loop.

As in mmdet's robustness benchmark (Michaelis et al., 2019), the corruptions act on the image
as mmcv loads it (BGR order).

Corrupt draws from numpy's global random state. Every cell reseeds it with its own seed
(``--seed`` plus a fixed offset per cell), in the main process and in each data-loader worker, so
a cell gives the same images whether it runs alone, after others or in a resumed run (with the
same number of processes and workers, which decide which worker sees which image).

Outputs in ``--out-dir``: ``coco_c.json`` (every finished cell with all its COCO metrics, and
the summary) and ``coco_c.md`` (tables). The JSON is rewritten after each cell; cells already in
it are skipped, so an interrupted run resumes where it stopped.

Summary, per headline metric (``bbox_mAP``, ``segm_mAP``): the clean value (P), the mean over
severities of each corruption and its retention (mean / clean), the mean over all corrupted cells
(mPC) and the relative performance under corruption (rPC = mPC / P).

Examples:
    python tools/test_coco_c.py configs/det/cascade-mask-rcnn_fan-t-hybrid_fpn_ms-3x_coco.py \\
        work_dirs/cascade-mask-rcnn_fan-t-hybrid_fpn_ms-3x_coco/epoch_36.pth
    python tools/test_coco_c.py CONFIG CKPT --corruptions fog snow --severities 3 5
    python -m torch.distributed.run --nproc_per_node=8 tools/test_coco_c.py CONFIG CKPT \\
        --launcher pytorch --out-dir work_dirs/coco_c/fan_t
"""
import argparse
import copy
import json
import os
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import numpy as np  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.dist import is_main_process  # noqa: E402
from mmengine.runner import Runner, TestLoop  # noqa: E402

import stl_mm  # noqa: E402,F401  (registers the backbone and patches imagecorruptions)
from stl_mm.compat.imagecorruptions import (ALL_CORRUPTIONS,  # noqa: E402
                                            BENCHMARK_CORRUPTIONS, SEVERITIES)
from stl_mm.engine.runner_setup import (DictAction, add_launcher_arguments,  # noqa: E402
                                        build_runner, close_distributed, parse_launcher_env,
                                        prepare_config)

CLEAN = 'clean'
HEADLINE_METRICS = ('bbox_mAP', 'segm_mAP')
RESULTS_FILE = 'coco_c.json'
REPORT_FILE = 'coco_c.md'
_LOAD_TRANSFORMS = ('LoadImageFromFile', 'mmdet.LoadImageFromFile')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='detector config file')
    parser.add_argument('checkpoint', help='detector checkpoint (mmengine format)')
    parser.add_argument('--corruptions', nargs='+', default=list(BENCHMARK_CORRUPTIONS),
                        choices=ALL_CORRUPTIONS, metavar='NAME',
                        help='corruptions to evaluate (default: the 15 benchmark ones); any of '
                        f'{", ".join(ALL_CORRUPTIONS)}')
    parser.add_argument('--severities', nargs='+', type=int, default=list(SEVERITIES),
                        choices=SEVERITIES, metavar='S', help='severities (default: 1 2 3 4 5)')
    parser.add_argument('--out-dir', help='results folder (default: work_dirs/coco_c/<config>)')
    parser.add_argument('--seed', type=int, default=0, help='base seed of the corruptions')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    add_launcher_arguments(parser)
    return parser.parse_args(argv)


def cell_name(corruption: str, severity: int) -> str:
    """Key of a cell in the results: ``clean`` or ``<corruption>/<severity>``."""
    return CLEAN if corruption == CLEAN else f'{corruption}/{severity}'


def cell_seed(base_seed: int, corruption: str, severity: int) -> int:
    """Seed of a cell: fixed per (corruption, severity), independent of which cells run."""
    if corruption == CLEAN:
        return base_seed
    return base_seed + 10 * (ALL_CORRUPTIONS.index(corruption) + 1) + severity


def corrupted_test_config(cfg: Config, corruption: str, severity: int) -> Config:
    """Copy of ``cfg`` whose test images are corrupted right after loading.

    Args:
        cfg: A detection config with ``test_dataloader.dataset.pipeline``.
        corruption: One of the imagecorruptions names.
        severity: 1 to 5.

    Returns:
        A new config; ``cfg`` is untouched.
    """
    cfg = copy.deepcopy(cfg)
    dataset = cfg.test_dataloader.dataset
    pipeline: Optional[List[dict]] = dataset.get('pipeline')
    if pipeline is None:
        raise ValueError('test_dataloader.dataset has no pipeline (a wrapped dataset?); COCO-C '
                         'needs a plain dataset config such as CocoDataset with its pipeline.')
    load_index = next(
        (i for i, step in enumerate(pipeline) if step.get('type') in _LOAD_TRANSFORMS), None)
    if load_index is None:
        raise ValueError('The test pipeline has no LoadImageFromFile step; COCO-C inserts the '
                         'Corrupt transform right after it. Add it as the first step.')
    if any(step.get('type') in ('Corrupt', 'mmdet.Corrupt') for step in pipeline):
        raise ValueError('The test pipeline already contains Corrupt; give this tool the clean '
                         'config and choose corruptions with --corruptions/--severities.')
    pipeline.insert(load_index + 1, dict(type='Corrupt', corruption=corruption,
                                         severity=severity))
    return cfg


def headline(metrics: Dict[str, float]) -> Dict[str, float]:
    """``bbox_mAP`` / ``segm_mAP`` from an evaluator's keys (e.g. ``coco/bbox_mAP``)."""
    found = {}
    for key, value in metrics.items():
        short = key.rsplit('/', 1)[-1]
        if short in HEADLINE_METRICS:
            found[short] = float(value)
    return found


def summarize(cells: Dict[str, dict]) -> Dict[str, dict]:
    """Clean value, per-corruption means and retention, mPC and rPC for each headline metric.

    Args:
        cells: Cell name -> ``{'metrics': {...}}`` as stored in the results file.

    Returns:
        Metric -> ``{'clean', 'mPC', 'rPC', 'per_corruption': {name: {'mean', 'retention'}}}``.
        Ratios are ``None`` when the clean value is missing or zero.
    """
    summary = {}
    for metric in HEADLINE_METRICS:
        values: Dict[Tuple[str, int], float] = {}
        for name, cell in cells.items():
            value = headline(cell['metrics']).get(metric)
            if value is not None and name != CLEAN:
                corruption, severity = name.split('/')
                values[(corruption, int(severity))] = value
        clean = headline(cells.get(CLEAN, {}).get('metrics', {})).get(metric)
        if clean is None and not values:
            continue

        def ratio(value: float) -> Optional[float]:
            return value / clean if clean else None

        per_corruption = {}
        for corruption in dict.fromkeys(c for c, _ in values):
            mean = float(np.mean([v for (c, _), v in values.items() if c == corruption]))
            per_corruption[corruption] = dict(mean=mean, retention=ratio(mean))
        mpc = float(np.mean(list(values.values()))) if values else None
        summary[metric] = dict(clean=clean, mPC=mpc,
                               rPC=ratio(mpc) if mpc is not None else None,
                               per_corruption=per_corruption)
    return summary


def _percent(value: Optional[float]) -> str:
    return '–' if value is None else f'{100 * value:.1f}'


def markdown_report(results: dict) -> str:
    """Tables of the results file: a headline table and one table per metric."""
    cells, summary = results['cells'], results['summary']
    lines = [f'# COCO-C: {osp.basename(results["config"])}', '',
             f'Checkpoint: `{results["checkpoint"]}`. Values are mAP x 100; retention and rPC '
             'are relative to clean (%).', '',
             '| metric | clean (P) | mPC | rPC |', '| --- | --- | --- | --- |']
    for metric, entry in summary.items():
        lines.append(f'| {metric} | {_percent(entry["clean"])} | {_percent(entry["mPC"])} | '
                     f'{_percent(entry["rPC"])} |')
    severities = sorted({int(name.split('/')[1]) for name in cells if name != CLEAN})
    for metric, entry in summary.items():
        lines += ['', f'## {metric}', '',
                  '| corruption | ' + ' | '.join(map(str, severities)) + ' | mean | retention |',
                  '| --- ' * (len(severities) + 3) + '|']
        for corruption, aggregate in entry['per_corruption'].items():
            row = [_percent(headline(cells.get(cell_name(corruption, s), {}).get(
                'metrics', {})).get(metric)) for s in severities]
            lines.append(f'| {corruption} | ' + ' | '.join(row) +
                         f' | {_percent(aggregate["mean"])} | '
                         f'{_percent(aggregate["retention"])} |')
    return '\n'.join(lines) + '\n'


def _write_atomically(path: str, text: str) -> None:
    temporary = path + '.tmp'
    with open(temporary, 'w') as f:
        f.write(text)
    os.replace(temporary, path)


def _test_cell(runner: Runner, cfg: Config, seed: int) -> Dict[str, float]:
    """One test loop over ``cfg``'s test set with the runner's loaded model."""
    np.random.seed(seed)  # Corrupt in the main process (num_workers=0)
    dataloader = Runner.build_dataloader(cfg.test_dataloader, seed=seed)  # and in workers
    loop = TestLoop(runner, dataloader, cfg.test_evaluator, fp16=cfg.test_cfg.get('fp16', False))
    return {key: float(value) for key, value in loop.run().items()}


def _save(results: dict, out_dir: str) -> None:
    """Write the JSON and Markdown results (main process only)."""
    if not is_main_process():
        return
    os.makedirs(out_dir, exist_ok=True)
    results['summary'] = summarize(results['cells'])
    _write_atomically(osp.join(out_dir, RESULTS_FILE), json.dumps(results, indent=2))
    _write_atomically(osp.join(out_dir, REPORT_FILE), markdown_report(results))


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Run the tool; returns the results (also written to ``--out-dir``)."""
    args = parse_args(argv)
    parse_launcher_env(args.local_rank)
    config_name = osp.splitext(osp.basename(args.config))[0]
    out_dir = args.out_dir or osp.join('work_dirs', 'coco_c', config_name)
    cfg = prepare_config(args.config, osp.join(out_dir, 'logs'), args.cfg_options, args.launcher)
    cfg.load_from = args.checkpoint

    results_path = osp.join(out_dir, RESULTS_FILE)
    results = dict(config=args.config, checkpoint=args.checkpoint, cells={})
    if osp.isfile(results_path):
        with open(results_path) as f:
            results['cells'] = json.load(f)['cells']
    todo = [(CLEAN, 0)] + [(c, s) for c in args.corruptions for s in args.severities]
    todo = [(c, s) for c, s in todo if cell_name(c, s) not in results['cells']]

    if todo:
        runner = build_runner(cfg)
        runner.call_hook('before_run')
        runner.load_or_resume()
        for corruption, severity in todo:
            name = cell_name(corruption, severity)
            cell_cfg = cfg if corruption == CLEAN else corrupted_test_config(
                cfg, corruption, severity)
            seed = cell_seed(args.seed, corruption, severity)
            runner.logger.info(f'COCO-C cell {name} (seed {seed})')
            results['cells'][name] = dict(seed=seed, metrics=_test_cell(runner, cell_cfg, seed))
            _save(results, out_dir)
        runner.call_hook('after_run')
    _save(results, out_dir)
    results['summary'] = summarize(results['cells'])
    if is_main_process():
        print(markdown_report(results))
    return results


if __name__ == '__main__':
    main()
    close_distributed()
