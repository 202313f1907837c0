"""The demo's Fashion-MNIST-C evaluation: 15 corruptions x 5 severities on a seeded subset.

Kept apart from :mod:`stl_mm.apis.demo` on purpose: :func:`evaluate_robustness` is the one
place the demo evaluates corruptions, to be replaced by the package's shared robustness core
(one cell loop, corruption seed and results file for every benchmark) with the same arguments
and return structure.
"""
import time
from typing import TYPE_CHECKING, Dict, Sequence

import numpy as np
import torch
from mmcv.transforms import Compose

from stl_mm.compat.imagecorruptions import BENCHMARK_CORRUPTIONS, SEVERITIES, corrupt
from stl_mm.evaluation.metrics.robustness import summarize_robustness

if TYPE_CHECKING:
    from stl_mm.apis.demo import DemoSizes

__all__ = ['evaluate_robustness', 'summarize_corruptions']


@torch.no_grad()
def predict(models: Dict[str, torch.nn.Module], pipeline: Compose, images: Sequence[np.ndarray],
            batch_size: int = 500) -> Dict[str, np.ndarray]:
    """Top-1 predictions of each model on raw images passed through ``pipeline``."""
    predictions = {name: [] for name in models}
    for start in range(0, len(images), batch_size):
        packed = [pipeline(dict(img=image)) for image in images[start:start + batch_size]]
        batch = [item['inputs'] for item in packed]
        for name, model in models.items():
            inputs = model.data_preprocessor(dict(inputs=batch), False)['inputs']
            logits = model.head.prediction_logits(model.extract_feat(inputs))
            predictions[name].append(logits.argmax(dim=1).numpy())
    return {name: np.concatenate(values) for name, values in predictions.items()}


def corruption_seed(seed: int, corruption: str, severity: int, index: int) -> int:
    """A fixed seed per (corruption, severity, test image)."""
    return (seed * 1_000_003 + BENCHMARK_CORRUPTIONS.index(corruption) * 100_003 +
            severity * 10_007 + index) % 2**32


def evaluate_robustness(models: Dict[str, torch.nn.Module], pipeline: Compose, dataset,
                        sizes: 'DemoSizes', seed: int) -> dict:
    """Clean and Fashion-MNIST-C top-1 of each model.

    Args:
        models: Classifiers in eval mode by name.
        pipeline: The test pipeline, applied to every raw (and corrupted) image.
        dataset: Fashion-MNIST's test set without a pipeline (raw 28x28 grey arrays).
        sizes: ``clean_images`` (None: all) and ``corruption_images`` (the seeded subset).
        seed: Seed of the subsets and of the corruptions.

    Returns:
        ``test_images``, ``subset_size``, ``subset_indices`` and ``models[name]`` with
        ``clean_top1``, ``clean_top1_subset``, ``cells`` by ``(corruption, severity)`` and the
        summary of :func:`summarize_corruptions`.
    """
    rng = np.random.default_rng(seed)
    all_indices = np.arange(len(dataset))
    if sizes.clean_images is not None:
        all_indices = np.sort(rng.choice(len(dataset), sizes.clean_images, replace=False))
    subset = np.sort(rng.choice(all_indices, min(sizes.corruption_images, len(all_indices)),
                                replace=False))
    infos = [dataset.get_data_info(int(index)) for index in all_indices]
    labels = np.array([int(info['gt_label']) for info in infos])
    clean_predictions = predict(models, pipeline, [info['img'] for info in infos])
    in_subset = np.isin(all_indices, subset)
    subset_images = [info['img'] for info, chosen in zip(infos, in_subset) if chosen]
    subset_labels = labels[in_subset]

    results = {name: dict(clean_top1=100 * float(np.mean(clean_predictions[name] == labels)),
                          clean_top1_subset=100 * float(
                              np.mean(clean_predictions[name][in_subset] == subset_labels)),
                          cells={}) for name in models}
    start = time.perf_counter()
    for corruption in BENCHMARK_CORRUPTIONS:
        for severity in SEVERITIES:
            corrupted = [corrupt(image, corruption, severity,
                                 corruption_seed(seed, corruption, severity, int(index)))
                         for image, index in zip(subset_images, subset)]
            predictions = predict(models, pipeline, corrupted)
            for name in models:
                results[name]['cells'][(corruption, severity)] = 100 * float(
                    np.mean(predictions[name] == subset_labels))
        print(f'[demo] Fashion-MNIST-C: {corruption} done '
              f'({time.perf_counter() - start:.0f} s)', flush=True)
    for name in models:
        results[name].update(
            summarize_corruptions(results[name]['cells'], results[name]['clean_top1_subset']))
    return dict(test_images=len(all_indices), subset_size=len(subset),
                subset_indices=subset.tolist(), models=results)


def summarize_corruptions(cells: Dict[tuple, float], clean_top1: float) -> dict:
    """Per-corruption, per-severity and overall corrupted top-1 and retention.

    Args:
        cells: Top-1 (%) by ``(corruption, severity)`` for the 15 benchmark corruptions.
        clean_top1: Clean top-1 (%) on the same images.

    Returns:
        ``per_corruption[c] = dict(top1, retention)`` (means over severities),
        ``per_severity[s]`` (mean over corruptions), ``mean_corrupted_top1``, ``retention``
        (mean corrupted / clean, %) and ``cells`` keyed ``'<corruption>/<severity>'``.
    """
    # Retention is undefined (NaN) for a model that gets no clean image right.
    summary = summarize_robustness(cells, clean_top1 if clean_top1 > 0 else None)
    return dict(
        per_corruption={corruption: dict(top1=summary[f'top1/{corruption}'],
                                         retention=_retention(summary[f'top1/{corruption}'],
                                                              clean_top1))
                        for corruption in BENCHMARK_CORRUPTIONS},
        per_severity={severity: float(np.mean([cells[(corruption, severity)]
                                               for corruption in BENCHMARK_CORRUPTIONS]))
                      for severity in SEVERITIES},
        mean_corrupted_top1=summary['mCA'],
        retention=summary.get('retention', float('nan')),
        cells={f'{corruption}/{severity}': value
               for (corruption, severity), value in cells.items()})


def _retention(corrupted: float, clean: float) -> float:
    return 100 * corrupted / clean if clean > 0 else float('nan')
