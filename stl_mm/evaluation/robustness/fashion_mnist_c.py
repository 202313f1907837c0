"""Fashion-MNIST-C: the demo's corrupted test subset, through the robustness core.

The demo evaluates in-memory models on raw 28x28 arrays, several models on the same corrupted
images, so it does not go through a runner. Everything else is the core's: the cell list
(:func:`~stl_mm.evaluation.robustness.cells.corruption_cells`), the per-image seed
(:func:`~stl_mm.compat.imagecorruptions.corruption_seed`, keyed by the image's index in the test
set), the results file (:class:`~stl_mm.evaluation.robustness.results.RobustnessResults`, so an
interrupted evaluation resumes and other inputs are refused), the summary
(:func:`~stl_mm.evaluation.metrics.robustness.summarize_robustness`) and the tables
(:mod:`stl_mm.evaluation.reports`).
"""
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from stl_mm.compat.imagecorruptions import (BENCHMARK_CORRUPTIONS, SEVERITIES, corrupt,
                                            corruption_seed)
from stl_mm.evaluation.metrics.robustness import summarize_robustness
from stl_mm.evaluation.reports import Table
from stl_mm.evaluation.robustness.cells import corruption_cells, parse_cell_name
from stl_mm.evaluation.robustness.results import (RobustnessResults, checkpoint_sha256,
                                                  data_source)

__all__ = ['Predict', 'fashion_mnist_c_results', 'evaluate_fashion_mnist_c',
           'summarize_corruptions', 'fashion_mnist_c_tables']

#: Raw images -> top-1 predictions (an int array) of each model, by model name.
Predict = Callable[[Sequence[np.ndarray]], Dict[str, np.ndarray]]


def fashion_mnist_c_results(path: str, checkpoints: Mapping[str, str], data_dir: str,
                            seed: int, clean_images: Optional[int],
                            corruption_images: int) -> RobustnessResults:
    """The results file of a Fashion-MNIST-C evaluation of the given checkpoints."""
    inputs = dict(suite='fashion_mnist_c', seed=seed, clean_images=clean_images,
                  corruption_images=corruption_images,
                  data=dict(fashion_mnist=data_source(data_dir, 'on_the_fly')),
                  checkpoint_sha256={name: checkpoint_sha256(ckpt) for name, ckpt in
                                     checkpoints.items()})
    return RobustnessResults(path, inputs, 'delete it (or use another --work-dir)',
                             about=dict(checkpoints=dict(checkpoints)))


def _retention(corrupted: float, clean: float) -> float:
    return 100 * corrupted / clean if clean > 0 else float('nan')


def summarize_corruptions(cells: Dict[tuple, float], clean_top1: float,
                          corruptions: Sequence[str] = BENCHMARK_CORRUPTIONS,
                          severities: Sequence[int] = SEVERITIES) -> dict:
    """Per-corruption, per-severity and overall corrupted top-1 and retention.

    Args:
        cells: Top-1 (%) by ``(corruption, severity)``.
        clean_top1: Clean top-1 (%) on the same images.
        corruptions: The benchmark corruptions evaluated.
        severities: The severities evaluated.

    Returns:
        ``per_corruption[c] = dict(top1, retention)`` (means over severities),
        ``per_severity[s]`` (mean over corruptions), ``mean_corrupted_top1``, ``retention``
        (mean corrupted / clean, %) and ``cells`` keyed ``'<corruption>/<severity>'``.
    """
    # Retention is undefined (NaN) for a model that gets no clean image right.
    summary = summarize_robustness(cells, clean_top1 if clean_top1 > 0 else None)
    return dict(
        per_corruption={c: dict(top1=summary[f'top1/{c}'],
                                retention=_retention(summary[f'top1/{c}'], clean_top1))
                        for c in corruptions},
        per_severity={s: float(np.mean([cells[(c, s)] for c in corruptions]))
                      for s in severities},
        mean_corrupted_top1=summary['mCA'],
        retention=summary.get('retention', float('nan')),
        cells={f'{corruption}/{severity}': value
               for (corruption, severity), value in cells.items()})


def evaluate_fashion_mnist_c(predict: Predict, model_names: Sequence[str], dataset,
                             corruption_images: int, seed: int,
                             clean_images: Optional[int] = None,
                             results: Optional[RobustnessResults] = None,
                             corruptions: Sequence[str] = BENCHMARK_CORRUPTIONS,
                             severities: Sequence[int] = SEVERITIES) -> dict:
    """Clean and Fashion-MNIST-C top-1 of each model.

    Args:
        predict: Top-1 predictions of every model on raw images (pipeline included).
        model_names: The keys ``predict`` returns.
        dataset: Fashion-MNIST's test set without a pipeline (``get_data_info(i)`` gives
            ``img`` and ``gt_label``).
        corruption_images: Size of the seeded test subset that is corrupted.
        seed: Seed of the subsets and of every corrupted image.
        clean_images: Evaluate only a seeded subset of this size of the test set (None: all).
        results: Where finished cells are recorded; recorded cells are not recomputed.
        corruptions: Benchmark corruptions (default: the 15).
        severities: Severities (default 1-5).

    Returns:
        ``test_images``, ``subset_size``, ``subset_indices`` and ``models[name]`` with
        ``clean_top1``, ``clean_top1_subset`` and :func:`summarize_corruptions`'s entries.
    """
    rng = np.random.default_rng(seed)
    all_indices = np.arange(len(dataset))
    if clean_images is not None:
        all_indices = np.sort(rng.choice(len(dataset), clean_images, replace=False))
    subset = np.sort(rng.choice(all_indices, min(corruption_images, len(all_indices)),
                                replace=False))
    infos = [dataset.get_data_info(int(index)) for index in all_indices]
    labels = np.array([int(info['gt_label']) for info in infos])
    clean_predictions = predict([info['img'] for info in infos])
    in_subset = np.isin(all_indices, subset)
    subset_images = [info['img'] for info, chosen in zip(infos, in_subset) if chosen]
    subset_labels = labels[in_subset]

    recorded = results.cells if results is not None else {}
    start = time.perf_counter()
    for name in corruption_cells(corruptions, severities):
        if name in recorded:
            continue
        corruption, severity = parse_cell_name(name)
        corrupted = [corrupt(image, corruption, severity,
                             corruption_seed(seed, str(int(index)), corruption, severity))
                     for image, index in zip(subset_images, subset)]
        predictions = predict(corrupted)
        cell = dict(metrics={f'{model}/top1': 100 * float(np.mean(
            predictions[model] == subset_labels)) for model in model_names},
            num_samples=len(subset_images))
        if results is not None:
            results.record(name, cell)
        else:
            recorded[name] = cell
        if severity == severities[-1]:
            print(f'[robustness] Fashion-MNIST-C: {corruption} done '
                  f'({time.perf_counter() - start:.0f} s)', flush=True)

    models = {}
    for model in model_names:
        cells = {parse_cell_name(name): recorded[name]['metrics'][f'{model}/top1']
                 for name in corruption_cells(corruptions, severities)}
        clean_subset = 100 * float(np.mean(clean_predictions[model][in_subset] == subset_labels))
        models[model] = dict(
            clean_top1=100 * float(np.mean(clean_predictions[model] == labels)),
            clean_top1_subset=clean_subset,
            **summarize_corruptions(cells, clean_subset, corruptions, severities))
    robustness = dict(test_images=len(all_indices), subset_size=len(subset),
                      subset_indices=subset.tolist(), models=models)
    if results is not None:
        results.write({model: {k: v for k, v in entry.items() if k != 'cells'}
                       for model, entry in models.items()},
                      dict(corruptions=list(corruptions), severities=list(severities)))
    return robustness


def fashion_mnist_c_tables(robustness: dict) -> List[Table]:
    """The demo's three robustness tables: overview, per corruption, per severity."""
    models = robustness['models']
    names = list(models)
    first = models[names[0]]
    corruptions, severities = list(first['per_corruption']), list(first['per_severity'])
    size = robustness['subset_size']
    tables = [Table('Clean and corrupted top-1 (%)', [
        'model', f'clean top-1 ({robustness["test_images"]} test images)',
        f'clean top-1 (subset of {size})',
        f'mean corrupted top-1 ({len(corruptions)} x {len(severities)})', 'retention'],
        [[name, models[name]['clean_top1'], models[name]['clean_top1_subset'],
          models[name]['mean_corrupted_top1'], models[name]['retention']] for name in names])]
    rows = [[corruption] + [value for name in names for value in (
        models[name]['per_corruption'][corruption]['top1'],
        models[name]['per_corruption'][corruption]['retention'])] for corruption in corruptions]
    rows.append(['**mean**'] + [value for name in names for value in (
        models[name]['mean_corrupted_top1'], models[name]['retention'])])
    tables.append(Table(
        f'Fashion-MNIST-C per corruption (mean over severities {severities[0]}-{severities[-1]}, '
        f'{size} test images), %',
        ['corruption'] + [f'{name} {what}' for name in names for what in ('top-1', 'retention')],
        rows))
    tables.append(Table(
        f'Fashion-MNIST-C per severity (mean over the {len(corruptions)} corruptions), top-1 %',
        ['severity'] + names, [[str(s)] + [models[name]['per_severity'][s] for name in names]
                               for s in severities]))
    return tables
