"""Fashion-MNIST-C through the robustness core: the demo's structure, the common seed, the
results file and the tables."""
import json

import numpy as np
import pytest
import torch

from stl_mm.compat.imagecorruptions import BENCHMARK_CORRUPTIONS, corrupt, corruption_seed
from stl_mm.evaluation.reports import render_tables
from stl_mm.evaluation.robustness.fashion_mnist_c import (evaluate_fashion_mnist_c,
                                                          fashion_mnist_c_results,
                                                          fashion_mnist_c_tables,
                                                          summarize_corruptions)


class TinyTestSet:
    """Raw 28x28 images whose label is whether they are bright (1) or dark (0)."""

    def __init__(self, count: int = 12) -> None:
        rng = np.random.default_rng(0)
        self.labels = [index % 2 for index in range(count)]
        self.images = [np.full((28, 28), 200 if label else 40, np.uint8) +
                       rng.integers(0, 10, (28, 28), dtype=np.uint8) for label in self.labels]

    def __len__(self) -> int:
        return len(self.images)

    def get_data_info(self, index: int) -> dict:
        return dict(img=self.images[index], gt_label=self.labels[index])


class BrightnessModels:
    """Two 'models' thresholding the mean pixel; records every batch they see."""

    def __init__(self) -> None:
        self.batches = []

    def __call__(self, images):
        self.batches.append([image.copy() for image in images])
        means = np.array([image.mean() for image in images])
        return {'strict': (means > 120).astype(int), 'lenient': (means > 60).astype(int)}


CORRUPTIONS, SEVERITIES = ('gaussian_noise', 'contrast'), (1, 5)


def _evaluate(models, results=None):
    return evaluate_fashion_mnist_c(models, ['strict', 'lenient'], TinyTestSet(), 4, seed=3,
                                    results=results, corruptions=CORRUPTIONS,
                                    severities=SEVERITIES)


def test_the_demo_structure_and_the_common_seed():
    models = BrightnessModels()
    robustness = _evaluate(models)
    assert set(robustness) == {'test_images', 'subset_size', 'subset_indices', 'models'}
    assert robustness['test_images'] == 12 and robustness['subset_size'] == 4
    strict = robustness['models']['strict']
    assert set(strict) == {'clean_top1', 'clean_top1_subset', 'per_corruption', 'per_severity',
                           'mean_corrupted_top1', 'retention', 'cells'}
    assert strict['clean_top1'] == 100.0 and strict['clean_top1_subset'] == 100.0
    assert set(strict['cells']) == {'gaussian_noise/1', 'gaussian_noise/5', 'contrast/1',
                                    'contrast/5'}
    assert set(strict['per_severity']) == {1, 5}
    # The first corrupted batch is gaussian_noise at severity 1, seeded per test-set index.
    subset = robustness['subset_indices']
    expected = [corrupt(TinyTestSet().images[index], 'gaussian_noise', 1,
                        corruption_seed(3, str(index), 'gaussian_noise', 1)) for index in subset]
    assert all(np.array_equal(a, b) for a, b in zip(models.batches[1], expected))
    tables = render_tables(fashion_mnist_c_tables(robustness))
    assert '## Fashion-MNIST-C per severity (mean over the 2 corruptions), top-1 %' in tables
    assert '| **mean** |' in tables


def test_results_file_resumes_and_refuses_other_checkpoints(tmp_path):
    checkpoints = {'strict': tmp_path / 'strict.pth', 'lenient': tmp_path / 'lenient.pth'}
    for name, path in checkpoints.items():
        torch.save({'state_dict': {'w': torch.tensor(1. if name == 'strict' else 2.)}}, path)
    path = str(tmp_path / 'fashion_mnist_c.json')

    def results():
        return fashion_mnist_c_results(path, {k: str(v) for k, v in checkpoints.items()},
                                       str(tmp_path / 'data'), 3, None, 4)

    first = _evaluate(BrightnessModels(), results())
    saved = json.loads(open(path).read())
    assert set(saved['cells']) == {'gaussian_noise/1', 'gaussian_noise/5', 'contrast/1',
                                   'contrast/5'}
    models = BrightnessModels()
    assert _evaluate(models, results()) == first
    assert len(models.batches) == 1  # only the clean images: every cell was recorded
    torch.save({'state_dict': {'w': torch.tensor(5.)}}, checkpoints['lenient'])
    with pytest.raises(SystemExit, match='checkpoint_sha256.lenient: recorded'):
        results()


def test_corruption_summary_of_a_known_accuracy_set():
    # Corruption number c (0..14) scores 80 - c - 2 * (severity - 1) percent.
    cells = {(name, severity): 80. - c - 2 * (severity - 1)
             for c, name in enumerate(BENCHMARK_CORRUPTIONS) for severity in range(1, 6)}
    summary = summarize_corruptions(cells, clean_top1=90.)
    assert summary['per_corruption']['gaussian_noise']['top1'] == pytest.approx(76.)
    assert summary['per_corruption']['jpeg_compression']['top1'] == pytest.approx(62.)
    assert summary['per_corruption']['shot_noise']['retention'] == pytest.approx(100 * 75 / 90)
    assert summary['mean_corrupted_top1'] == pytest.approx(69.)
    assert summary['retention'] == pytest.approx(100 * 69 / 90)
    assert summary['per_severity'] == pytest.approx({1: 73., 2: 71., 3: 69., 4: 67., 5: 65.})
    assert summary['cells']['fog/3'] == pytest.approx(80 - 9 - 4)
    no_hits = summarize_corruptions({key: 0. for key in cells}, clean_top1=0.)
    assert no_hits['mean_corrupted_top1'] == 0
    assert no_hits['retention'] != no_hits['retention']  # NaN
