"""stl_mm.apis.demo_robustness: the Fashion-MNIST-C summary on a known accuracy set."""
import pytest

from stl_mm.apis.demo_robustness import summarize_corruptions
from stl_mm.compat.imagecorruptions import BENCHMARK_CORRUPTIONS


def test_corruption_summary_of_a_known_accuracy_set():
    # Corruption number c (0..14) scores 80 - c - 2 * (severity - 1) percent.
    cells = {(name, severity): 80. - c - 2 * (severity - 1)
             for c, name in enumerate(BENCHMARK_CORRUPTIONS) for severity in range(1, 6)}
    summary = summarize_corruptions(cells, clean_top1=90.)
    # Mean over severities 1..5 of 80 - c - 2(s - 1) is 76 - c.
    assert summary['per_corruption']['gaussian_noise']['top1'] == pytest.approx(76.)
    assert summary['per_corruption']['jpeg_compression']['top1'] == pytest.approx(62.)
    assert summary['per_corruption']['shot_noise']['retention'] == pytest.approx(100 * 75 / 90)
    # Mean over corruptions of 76 - c, c = 0..14, is 69; retention 69 / 90.
    assert summary['mean_corrupted_top1'] == pytest.approx(69.)
    assert summary['retention'] == pytest.approx(100 * 69 / 90)
    # Severity s: mean over c of 80 - c - 2(s - 1) = 73 - 2(s - 1).
    assert summary['per_severity'] == pytest.approx({1: 73., 2: 71., 3: 69., 4: 67., 5: 65.})
    assert summary['cells']['fog/3'] == pytest.approx(80 - 9 - 4)


def test_corruption_summary_without_clean_hits_has_no_retention():
    cells = {(name, s): 0. for name in BENCHMARK_CORRUPTIONS for s in range(1, 6)}
    summary = summarize_corruptions(cells, clean_top1=0.)
    assert summary['mean_corrupted_top1'] == 0
    assert summary['retention'] != summary['retention']  # NaN
