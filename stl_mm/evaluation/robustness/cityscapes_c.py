"""Cityscapes-C: a segmentor's mIoU on clean Cityscapes val and on every Cityscapes-C cell.

Each cell (clean, or one corruption at one severity) is the config's test dataset with its
``img_path`` pointed at ``CITY_C/<corruption>/<severity>`` while the labels stay the clean
``gtFine`` ones, run by :class:`~stl_mm.engine.runners.RobustnessCellLoop`. Before anything is
evaluated every pending cell is checked: it must hold exactly the clean image names
(:func:`~stl_mm.evaluation.robustness.cells.check_cell`), and none of the checked files may be
byte-identical to its clean source (a City-C tree of clean copies would otherwise report clean
accuracy as robustness).
"""
import copy
import filecmp
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from mmengine.config import Config

from stl_mm.evaluation.reports import Table, csv_table, write_text
from stl_mm.evaluation.robustness.cells import CLEAN, cell_name, check_cell, corruption_cells
from stl_mm.evaluation.robustness.cityscapes_c_generation import IMAGE_SUFFIX, list_images
from stl_mm.evaluation.robustness.evaluate import finish, run_cells, suite_results
from stl_mm.evaluation.robustness.results import data_source

__all__ = ['clean_image_dir', 'check_city_c_cell', 'refuse_official_segformer_checkpoint',
           'summarise', 'city_c_table', 'evaluate_city_c']

GENERATOR = 'tools/dataset_converters/gen_city_c.py'


def clean_image_dir(cfg: Config) -> Path:
    """The clean image folder of the config's test dataset (``data_root`` + ``img_path``)."""
    dataset = cfg.test_dataloader.dataset
    img_path = dataset.get('data_prefix', {}).get('img_path')
    if img_path is None:
        raise SystemExit('The config\'s test_dataloader.dataset has no data_prefix.img_path; '
                         'the Cityscapes-C evaluation needs a plain mmseg dataset (e.g. '
                         'CityscapesDataset) whose image folder it can redirect.')
    return Path(dataset.get('data_root') or '', img_path)


def evenly_spaced(items: Sequence[str], count: int) -> List[str]:
    """``count`` items spread over the sequence (all of them when ``count`` is 0)."""
    if count == 0 or count >= len(items):
        return list(items)
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def check_city_c_cell(clean_dir: Path, cell_dir: Path, clean_images: Sequence[str], suffix: str,
                      check_files: int) -> None:
    """Refuse a corrupted cell that is missing, incomplete or holds copies of clean images."""
    fix = (f'Regenerate it with {GENERATOR} --src {clean_dir} --dst <city-c root> (it resumes '
           'and only writes what is missing).')
    if not cell_dir.is_dir():
        raise SystemExit(f'Cityscapes-C cell {cell_dir} does not exist. {fix}')
    check_cell(f'Cityscapes-C cell {cell_dir}', Counter(clean_images),
               Counter(list_images(cell_dir, suffix)), 'images', fix)
    for image in evenly_spaced(clean_images, check_files):
        if filecmp.cmp(clean_dir / image, cell_dir / image, shallow=False):
            raise SystemExit(
                f'Refusing to evaluate: {cell_dir / image} is byte-identical to its clean source '
                f'{clean_dir / image}, so this cell would measure clean accuracy. The City-C '
                f'tree holds clean copies. {fix}')


def refuse_official_segformer_checkpoint(checkpoint: str) -> None:
    """Explain why official FAN segmentation checkpoints cannot be evaluated with our configs.

    They carry the original SegFormer head (``linear_c1..4``, ``linear_fuse``, ``linear_pred``):
    per-level linear projections without norm or activation, concatenated in the reverse order.
    mmseg's ``SegformerHead`` uses a conv + BN + ReLU per level, so no key mapping makes them
    equivalent.
    """
    from stl_mm.models.backbones.fan_checkpoint import read_checkpoint
    state_dict, _ = read_checkpoint(checkpoint)
    if any(key.startswith('decode_head.linear_c') for key in state_dict):
        raise SystemExit(
            f'{checkpoint} is an official FAN/SegFormer segmentation checkpoint: its decode head '
            '(linear_c*, linear_fuse, linear_pred) is the original SegFormer head, which is not '
            'mmseg\'s SegformerHead used by configs/seg, so its weights cannot be loaded. Train '
            'with configs/seg from the ImageNet checkpoint instead.')


def _miou(cells: Dict[str, dict], name: str) -> float:
    metrics = cells[name]['metrics']
    if 'mIoU' not in metrics:
        raise SystemExit(f'The test evaluator returned {sorted(metrics)} without mIoU; use '
                         'mmseg\'s IoUMetric (iou_metrics=[\'mIoU\']) as test_evaluator.')
    return metrics['mIoU']


def summarise(cells: Dict[str, dict], corruptions: Sequence[str],
              severities: Sequence[int]) -> dict:
    """mIoU per corruption (mean over severities), mean over corruptions, and retention."""
    clean = _miou(cells, CLEAN)
    per_severity = {c: {str(s): _miou(cells, cell_name(c, s)) for s in severities}
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


def city_c_table(summary: dict, severities: Sequence[int]) -> Table:
    """Clean, each corruption, then the mean over corruptions (retention as a ratio)."""

    def ratio(value: Optional[float]) -> Optional[str]:
        return None if value is None else f'{value:.4f}'

    blank = [''] * len(severities)
    rows = [[CLEAN, *blank, summary['clean_mIoU'], ratio(1.0)]]
    for corruption, values in summary['per_severity_mIoU'].items():
        rows.append([corruption, *(values[str(s)] for s in severities),
                     summary['per_corruption_mIoU'][corruption],
                     ratio(summary['per_corruption_retention'][corruption])])
    rows.append(['mean over corruptions', *blank, summary['mean_corrupted_mIoU'],
                 ratio(summary['retention'])])
    return Table('mIoU per corruption and severity',
                 ['corruption', *(f'severity {s}' for s in severities), 'mIoU', 'retention'],
                 rows)


def evaluate_city_c(cfg: Config, config: str, checkpoint: str, city_c: str, out: str,
                    corruptions: Sequence[str], severities: Sequence[int], check_files: int = 16,
                    use_ema: bool = True) -> dict:
    """Check and evaluate every pending cell into ``out`` (and ``.md``, ``.csv`` beside it).

    Returns:
        The summary (see :func:`summarise`).
    """
    clean_dir, city_c_root = clean_image_dir(cfg), Path(city_c)
    results = suite_results(out, cfg, config, checkpoint, 'choose another --out-dir (or '
                            'delete the file)', suite='cityscapes_c', use_ema=use_ema,
                            data=dict(clean=data_source(str(clean_dir)),
                                      city_c=data_source(str(city_c_root))))
    refuse_official_segformer_checkpoint(checkpoint)
    suffix = cfg.test_dataloader.dataset.get('img_suffix', IMAGE_SUFFIX)
    clean_images = list_images(clean_dir, suffix)
    if not clean_images:
        raise SystemExit(f'No *{suffix} images under the clean test folder {clean_dir}; check '
                         'the config\'s test_dataloader data_root and data_prefix.')
    plan = {CLEAN: clean_dir}
    plan.update({name: city_c_root / name for name in corruption_cells(corruptions, severities)})
    pending = results.pending(list(plan))
    for name in pending:
        if name != CLEAN:
            check_city_c_cell(clean_dir, plan[name], clean_images, suffix, check_files)
    print(f'{len(plan) - len(pending)} of {len(plan)} cells already in {out}; '
          f'evaluating {len(pending)}.')
    cells = []
    for name, folder in plan.items():
        dataset = copy.deepcopy(cfg.test_dataloader.dataset)
        dataset.data_prefix = dict(dataset.data_prefix, img_path=str(folder.resolve()))
        cells.append(dict(name=name, dataset=dataset, expected_samples=len(clean_images)))
    summary = summarise(run_cells(cfg, checkpoint, cells, results, use_ema), corruptions,
                        severities)
    table = city_c_table(summary, severities)

    def write_csv(stem: str) -> None:
        write_text(csv_table(table.header, table.rows), stem + '.csv')

    retention = 'n/a' if summary['retention'] is None else f'{summary["retention"]:.4f}'
    finish(results, summary, dict(corruptions=list(corruptions), severities=list(severities)),
           f'Cityscapes-C: `{checkpoint}`', [table], notes=[
               f'Clean mIoU {summary["clean_mIoU"]:.2f}, mean corrupted mIoU '
               f'{summary["mean_corrupted_mIoU"]:.2f}, retention {retention}.'],
           extra_outputs=write_csv)
    return summary
