"""Evaluate a segmentation checkpoint on clean Cityscapes and on every Cityscapes-C cell.

Each cell (clean, or one corruption at one severity) runs through mmseg's own test loop with the
config's test dataloader, its ``img_path`` pointed at ``CITY_C/<corruption>/<severity>`` while the
labels stay the clean ``gtFine`` ones. Before anything is evaluated, every pending cell is checked:
it must hold exactly the clean image names, and none of the checked files may be byte-identical
to its clean source (a City-C tree of clean copies, the failure mode of the official scripts,
would otherwise report clean accuracy as robustness).

Results go to ``OUT_DIR/city_c.{json,csv,md}``: mIoU per cell, per corruption (mean over
severities), the mean over corruptions, and retention (corrupted / clean). The JSON is updated
after every cell and finished cells are skipped on a rerun, so an interrupted run resumes.

Examples:
    python tools/test_city_c.py CONFIG CHECKPOINT --city-c data/cityscapes-c
    python -m torch.distributed.run --nproc_per_node 8 tools/test_city_c.py CONFIG CHECKPOINT \
        --city-c data/cityscapes-c --launcher pytorch
"""
import argparse
import copy
import csv
import filecmp
import json
import os
import os.path as osp
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.dist import is_main_process  # noqa: E402

import stl_mm  # noqa: E402,F401  (registers every module before the config is read)
from stl_mm.compat.imagecorruptions import ALL_CORRUPTIONS  # noqa: E402
from stl_mm.engine.runner_setup import (DictAction, add_launcher_arguments,  # noqa: E402
                                        build_runner, close_distributed, parse_launcher_env,
                                        prepare_config)

SEVERITIES = (1, 2, 3, 4, 5)
CLEAN = 'clean'
RESULTS_NAME = 'city_c'
DEFAULT_IMAGE_SUFFIX = '_leftImg8bit.png'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='segmentation config file')
    parser.add_argument('checkpoint', help='mmengine checkpoint of the whole segmentor')
    parser.add_argument('--city-c', default='data/cityscapes-c',
                        help='root written by tools/gen_city_c.py')
    parser.add_argument('--corruptions', nargs='+', default=list(ALL_CORRUPTIONS),
                        choices=ALL_CORRUPTIONS, metavar='NAME',
                        help='corruptions to evaluate (default: all 19 that gen_city_c.py makes)')
    parser.add_argument('--severities', nargs='+', type=int, default=list(SEVERITIES),
                        choices=SEVERITIES, metavar='S',
                        help='severities to evaluate (default 1-5; the official FAN script '
                        'averaged severities 1-3)')
    parser.add_argument('--out-dir', help='where the tables go (default: WORK_DIR/city_c)')
    parser.add_argument('--work-dir',
                        help='default parent of --out-dir (default: work_dirs/<config name>)')
    parser.add_argument('--check-files', type=int, default=16,
                        help='files per cell compared byte for byte with their clean source '
                        'before evaluating (0: all of them)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    add_launcher_arguments(parser)
    args = parser.parse_args(argv)
    if args.check_files < 0:
        parser.error(f'--check-files must be 0 (all) or positive, got {args.check_files}')
    args.corruptions = list(dict.fromkeys(args.corruptions))
    args.severities = sorted(set(args.severities))
    return args


def cell_name(corruption: str, severity: int) -> str:
    return f'{corruption}/{severity}'


def clean_image_dir(cfg: Config) -> Path:
    """The clean image folder of the config's test dataset (``data_root`` + ``img_path``)."""
    dataset = cfg.test_dataloader.dataset
    img_path = dataset.get('data_prefix', {}).get('img_path')
    if img_path is None:
        raise SystemExit('The config\'s test_dataloader.dataset has no data_prefix.img_path; '
                         'tools/test_city_c.py needs a plain mmseg dataset (e.g. '
                         'CityscapesDataset) whose image folder it can redirect.')
    return Path(dataset.get('data_root') or '', img_path)


def list_images(folder: Path, suffix: str) -> List[str]:
    """Relative (posix) paths of the images under ``folder``, sorted."""
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob('*' + suffix))


def evenly_spaced(items: Sequence[str], count: int) -> List[str]:
    """``count`` items spread over the sequence (all of them when ``count`` is 0)."""
    if count == 0 or count >= len(items):
        return list(items)
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def check_cell(clean_dir: Path, cell_dir: Path, clean_images: Sequence[str], suffix: str,
               check_files: int) -> None:
    """Refuse a corrupted cell that is missing, incomplete or holds copies of clean images."""
    fix = ('regenerate it with tools/gen_city_c.py --src {clean} --dst <city-c root> '
           '(it resumes and only writes what is missing)').format(clean=clean_dir)
    if not cell_dir.is_dir():
        raise SystemExit(f'Cityscapes-C cell {cell_dir} does not exist: {fix}')
    cell_images = list_images(cell_dir, suffix)
    if cell_images != list(clean_images):
        missing = sorted(set(clean_images) - set(cell_images))
        extra = sorted(set(cell_images) - set(clean_images))
        raise SystemExit(
            f'Cityscapes-C cell {cell_dir} does not match the clean images in {clean_dir}: '
            f'{len(missing)} missing (e.g. {missing[:3]}), {len(extra)} unexpected '
            f'(e.g. {extra[:3]}); {fix}')
    for image in evenly_spaced(clean_images, check_files):
        if filecmp.cmp(clean_dir / image, cell_dir / image, shallow=False):
            raise SystemExit(
                f'Refusing to evaluate: {cell_dir / image} is byte-identical to its clean source '
                f'{clean_dir / image}, so this cell would measure clean accuracy. The City-C '
                f'tree holds clean copies; {fix}')


def read_results(path: Path, config: str, checkpoint: str) -> Dict[str, Dict[str, float]]:
    """Finished cells of an earlier run with the same config and checkpoint."""
    if not path.is_file():
        return {}
    saved = json.loads(path.read_text())
    for key, value in (('config', config), ('checkpoint', checkpoint)):
        if saved.get(key) != value:
            raise SystemExit(f'{path} holds results of {key} {saved.get(key)}, not {value}; '
                             'choose another --out-dir or delete that file to start over.')
    return saved['cells']


def summarise(cells: Dict[str, Dict[str, float]], corruptions: Sequence[str],
              severities: Sequence[int]) -> dict:
    """mIoU per corruption (mean over severities), mean over corruptions, and retention."""
    clean = cells[CLEAN]['mIoU']
    per_severity = {c: {str(s): cells[cell_name(c, s)]['mIoU'] for s in severities}
                    for c in corruptions}
    per_corruption = {c: sum(values.values()) / len(values) for c, values in per_severity.items()}
    mean_corrupted = sum(per_corruption.values()) / len(per_corruption)

    def retention(value: float) -> Optional[float]:
        return value / clean if clean else None

    return dict(
        clean_mIoU=clean,
        mean_corrupted_mIoU=mean_corrupted,
        retention=retention(mean_corrupted),
        per_corruption_mIoU=per_corruption,
        per_corruption_retention={c: retention(v) for c, v in per_corruption.items()},
        per_severity_mIoU=per_severity,
    )


def _write_atomically(path: Path, text: str) -> None:
    handle, temp_name = tempfile.mkstemp(prefix='.tmp-', dir=path.parent)
    with os.fdopen(handle, 'w', newline='') as temp_file:
        temp_file.write(text)
    os.replace(temp_name, path)


def save_json(out_dir: Path, config: str, checkpoint: str, cells: dict,
              summary: Optional[dict] = None) -> None:
    record = dict(config=config, checkpoint=checkpoint, cells=cells)
    if summary is not None:
        record['summary'] = summary
    _write_atomically(out_dir / f'{RESULTS_NAME}.json', json.dumps(record, indent=2) + '\n')


def table_rows(summary: dict, severities: Sequence[int]) -> List[List[str]]:
    """Header and rows: clean, each corruption, then the mean over corruptions."""

    def fmt(value: Optional[float]) -> str:
        return '' if value is None else f'{value:.2f}'

    def fmt_ratio(value: Optional[float]) -> str:
        return '' if value is None else f'{value:.4f}'

    header = ['corruption', *(f'severity {s}' for s in severities), 'mIoU', 'retention']
    rows = [header, [CLEAN, *([''] * len(severities)), fmt(summary['clean_mIoU']), fmt_ratio(1.0)]]
    for corruption, values in summary['per_severity_mIoU'].items():
        rows.append([corruption, *(fmt(values[str(s)]) for s in severities),
                     fmt(summary['per_corruption_mIoU'][corruption]),
                     fmt_ratio(summary['per_corruption_retention'][corruption])])
    rows.append(['mean over corruptions', *([''] * len(severities)),
                 fmt(summary['mean_corrupted_mIoU']), fmt_ratio(summary['retention'])])
    return rows


def save_tables(out_dir: Path, summary: dict, severities: Sequence[int]) -> None:
    rows = table_rows(summary, severities)
    with open(out_dir / f'{RESULTS_NAME}.csv', 'w', newline='') as csv_file:
        csv.writer(csv_file).writerows(rows)
    lines = ['| ' + ' | '.join(rows[0]) + ' |', '|' + ' --- |' * len(rows[0])]
    lines += ['| ' + ' | '.join(row) + ' |' for row in rows[1:]]
    lines += ['', f"Clean mIoU {summary['clean_mIoU']:.2f}, mean corrupted mIoU "
              f"{summary['mean_corrupted_mIoU']:.2f}, retention "
              + ('n/a' if summary['retention'] is None else f"{summary['retention']:.4f}")]
    _write_atomically(out_dir / f'{RESULTS_NAME}.md', '\n'.join(lines) + '\n')


def refuse_official_segformer_checkpoint(checkpoint: str) -> None:
    """Explain why official FAN segmentation checkpoints cannot be evaluated with our configs.

    They carry the original SegFormer head (``linear_c1..4``, ``linear_fuse``, ``linear_pred``):
    per-level linear projections without norm or activation, concatenated in the reverse order.
    mmseg's ``SegformerHead`` uses a conv + BN + ReLU per level, so no key mapping makes them
    equivalent.
    """
    state = torch.load(checkpoint, map_location='cpu', weights_only=True)
    state_dict = state.get('state_dict', state)
    if any(key.startswith('decode_head.linear_c') for key in state_dict):
        raise SystemExit(
            f'{checkpoint} is an official FAN/SegFormer segmentation checkpoint: its decode head '
            '(linear_c*, linear_fuse, linear_pred) is the original SegFormer head, which is not '
            'mmseg\'s SegformerHead used by configs/seg, so its weights cannot be loaded. Train '
            'with configs/seg from the ImageNet checkpoint instead.')


def evaluate_cell(cfg: Config, checkpoint: str, image_dir: Path, work_dir: Path) -> dict:
    """Run mmseg's test loop on one image folder; labels stay those of the config."""
    cell_cfg = copy.deepcopy(cfg)
    dataset = cell_cfg.test_dataloader.dataset
    dataset.data_prefix = dict(dataset.data_prefix, img_path=str(image_dir.resolve()))
    cell_cfg.work_dir = str(work_dir)
    cell_cfg.load_from = None  # loaded strictly below: a mismatched checkpoint must fail loudly
    runner = build_runner(cell_cfg)
    runner.load_checkpoint(checkpoint, map_location='cpu', strict=True)
    metrics = runner.test()
    if 'mIoU' not in metrics:
        raise SystemExit(f'The test evaluator returned {sorted(metrics)} without mIoU; '
                         'use mmseg\'s IoUMetric (iou_metrics=[\'mIoU\']) as test_evaluator.')
    return {key: float(value) for key, value in metrics.items()}


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    parse_launcher_env(args.local_rank)
    cfg = prepare_config(args.config, args.work_dir, args.cfg_options, args.launcher)
    config, checkpoint = osp.abspath(args.config), osp.abspath(args.checkpoint)
    if not osp.isfile(checkpoint):
        raise SystemExit(f'Checkpoint {checkpoint} does not exist.')
    refuse_official_segformer_checkpoint(checkpoint)
    out_dir = Path(args.out_dir or osp.join(cfg.work_dir, RESULTS_NAME))  # logs in out_dir/logs
    out_dir.mkdir(parents=True, exist_ok=True)
    cells = read_results(out_dir / f'{RESULTS_NAME}.json', config, checkpoint)

    clean_dir, city_c = clean_image_dir(cfg), Path(args.city_c)
    suffix = cfg.test_dataloader.dataset.get('img_suffix', DEFAULT_IMAGE_SUFFIX)
    clean_images = list_images(clean_dir, suffix)
    if not clean_images:
        raise SystemExit(f'No *{suffix} images under the clean test folder {clean_dir}; check '
                         'the config\'s test_dataloader data_root and data_prefix.')
    plan = {CLEAN: clean_dir}
    for corruption in args.corruptions:
        for severity in args.severities:
            plan[cell_name(corruption, severity)] = city_c / corruption / str(severity)
    pending = {name: folder for name, folder in plan.items() if name not in cells}
    for name, folder in pending.items():
        if name != CLEAN:
            check_cell(clean_dir, folder, clean_images, suffix, args.check_files)
    print(f'{len(plan) - len(pending)} of {len(plan)} cells already in {out_dir}; '
          f'evaluating {len(pending)}.')

    for number, (name, folder) in enumerate(pending.items(), 1):
        print(f'[{number}/{len(pending)}] {name}: {folder}')
        log_dir = out_dir / 'logs' / name.replace('/', '_')
        cells[name] = evaluate_cell(cfg, checkpoint, folder, log_dir)
        if is_main_process():
            save_json(out_dir, config, checkpoint, cells)

    summary = summarise(cells, args.corruptions, args.severities)
    if is_main_process():
        save_json(out_dir, config, checkpoint, cells, summary)
        save_tables(out_dir, summary, args.severities)
        print((out_dir / f'{RESULTS_NAME}.md').read_text())
    return summary


if __name__ == '__main__':
    main()
    close_distributed()
