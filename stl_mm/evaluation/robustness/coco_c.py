"""COCO-C: a detector's box and mask mAP under common corruptions.

Every cell (corruption, severity) is the config's test set with
:class:`~stl_mm.datasets.robustness.ImageCorruption` inserted right after ``LoadImageFromFile``,
so the images are corrupted on the fly at their original resolution, as the offline COCO-C
images are; one ``clean`` cell gives the reference. As in mmdet's robustness benchmark
(Michaelis et al., 2019), the corruptions act on the image as mmcv loads it (BGR order). Each
image is seeded by :func:`~stl_mm.compat.imagecorruptions.corruption_seed` from its file name,
the corruption, the severity and ``--seed``, so a cell gives the same images alone, after others,
resumed, and with any number of processes and workers.

Summary, per headline metric (``bbox_mAP``, ``segm_mAP``): the clean value (P), the mean over
severities of each corruption and its retention (mean / clean), the mean over all corrupted cells
(mPC) and the relative performance under corruption (rPC = mPC / P).
"""
import copy
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmengine.config import Config

from stl_mm.evaluation.reports import Table
from stl_mm.evaluation.robustness.cells import (CLEAN, cell_name, corruption_cells,
                                                parse_cell_name)
from stl_mm.evaluation.robustness.evaluate import finish, run_cells, suite_results
from stl_mm.evaluation.robustness.results import data_source

__all__ = ['HEADLINE_METRICS', 'corrupted_dataset', 'headline', 'summarize', 'coco_c_tables',
           'evaluate_coco_c']

HEADLINE_METRICS = ('bbox_mAP', 'segm_mAP')
_LOAD_TRANSFORMS = ('LoadImageFromFile', 'mmdet.LoadImageFromFile')
_CORRUPTING_TRANSFORMS = ('Corrupt', 'mmdet.Corrupt', 'ImageCorruption', 'mmdet.ImageCorruption')


def corrupted_dataset(cfg: Config, corruption: str, severity: int, seed: int = 0) -> dict:
    """The config's test dataset whose images are corrupted right after loading.

    Args:
        cfg: A detection config with ``test_dataloader.dataset.pipeline``.
        corruption: One of the imagecorruptions names.
        severity: 1 to 5.
        seed: Base seed of the per-image corruption seeds.

    Returns:
        A new dataset config; ``cfg`` is untouched.
    """
    dataset = copy.deepcopy(cfg.test_dataloader.dataset)
    pipeline: Optional[List[dict]] = dataset.get('pipeline')
    if pipeline is None:
        raise ValueError('test_dataloader.dataset has no pipeline (a wrapped dataset?); COCO-C '
                         'needs a plain dataset config such as CocoDataset with its pipeline.')
    load_index = next(
        (i for i, step in enumerate(pipeline) if step.get('type') in _LOAD_TRANSFORMS), None)
    if load_index is None:
        raise ValueError('The test pipeline has no LoadImageFromFile step; COCO-C inserts the '
                         'corruption right after it. Add it as the first step.')
    if any(step.get('type') in _CORRUPTING_TRANSFORMS for step in pipeline):
        raise ValueError('The test pipeline already contains a corruption step; give this tool '
                         'the clean config and choose corruptions with --corruptions/'
                         '--severities.')
    pipeline.insert(load_index + 1, dict(type='ImageCorruption', corruption=corruption,
                                         severity=severity, seed=seed,
                                         channel_order='as_loaded'))
    return dataset


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
                values[parse_cell_name(name)] = value
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


def _percent(value: Optional[float]) -> Optional[float]:
    return None if value is None else 100 * value


def coco_c_tables(cells: Dict[str, dict], summary: Dict[str, dict]) -> List[Table]:
    """A headline table, then one table per metric (values x 100; render with one decimal)."""
    tables = [Table('Headline', ['metric', 'clean (P)', 'mPC', 'rPC'], [
        [metric, *(_percent(entry[key]) for key in ('clean', 'mPC', 'rPC'))]
        for metric, entry in summary.items()])]
    severities = sorted({parse_cell_name(name)[1] for name in cells if name != CLEAN})
    for metric, entry in summary.items():
        rows = [[corruption, *(_percent(headline(cells.get(cell_name(corruption, s), {}).get(
            'metrics', {})).get(metric)) for s in severities), _percent(aggregate['mean']),
                 _percent(aggregate['retention'])]
                for corruption, aggregate in entry['per_corruption'].items()]
        tables.append(Table(metric, ['corruption', *map(str, severities), 'mean', 'retention'],
                            rows))
    return tables


def evaluate_coco_c(cfg: Config, config: str, checkpoint: str, out: str,
                    corruptions: Sequence[str], severities: Sequence[int], seed: int = 0,
                    use_ema: bool = True) -> dict:
    """Evaluate the clean cell and every (corruption, severity) cell into ``out`` (and ``.md``).

    Returns:
        The results file's content (``cells``, ``summary``, ...).
    """
    dataset = cfg.test_dataloader.dataset
    results = suite_results(out, cfg, config, checkpoint, 'choose another --out-dir (or '
                            'delete the file)', suite='coco_c', seed=seed, use_ema=use_ema,
                            data=dict(coco=data_source(dataset.get('data_root'), 'on_the_fly',
                                                       ann_file=dataset.get('ann_file'))))
    cells = [dict(name=CLEAN, dataset=copy.deepcopy(dataset))]
    for name in corruption_cells(corruptions, severities):
        corruption, severity = parse_cell_name(name)
        cells.append(dict(name=name, dataset=corrupted_dataset(cfg, corruption, severity, seed)))
    recorded = run_cells(cfg, checkpoint, cells, results, use_ema)
    selected = {cell['name']: recorded[cell['name']] for cell in cells}
    summary = summarize(selected)
    finish(results, summary, dict(corruptions=list(corruptions), severities=list(severities)),
           f'COCO-C: `{checkpoint}`', coco_c_tables(selected, summary),
           notes=['Values are mAP x 100; retention and rPC are relative to clean (%).'], digits=1)
    return results.data
