"""Robustness formulas and the RobustnessAccuracy metric against values worked out by hand."""
import numpy as np
import pytest
import torch

from stl_mm.evaluation.metrics.robustness import (ALEXNET_CLEAN_ERROR, ALEXNET_ERRORS,
                                                  RobustnessAccuracy, corruption_error,
                                                  relative_corruption_error,
                                                  summarize_robustness)

# AlexNet's mean error over the 5 severities, as quoted by the ImageNet-C literature (mmpretrain's
# CorruptionError, robustness benchmarks): an independent check on the per-severity table.
QUOTED_ALEXNET_MEANS = {
    'gaussian_noise': 0.886428, 'shot_noise': 0.894468, 'impulse_noise': 0.922640,
    'defocus_blur': 0.819880, 'glass_blur': 0.826268, 'motion_blur': 0.785948,
    'zoom_blur': 0.798360, 'snow': 0.866816, 'frost': 0.826572, 'fog': 0.819324,
    'brightness': 0.564592, 'contrast': 0.853204, 'elastic_transform': 0.646056,
    'pixelate': 0.717840, 'jpeg_compression': 0.606500}


def test_alexnet_table_matches_the_quoted_means():
    assert set(ALEXNET_ERRORS) == set(QUOTED_ALEXNET_MEANS)
    for corruption, errors in ALEXNET_ERRORS.items():
        assert np.mean(errors) == pytest.approx(QUOTED_ALEXNET_MEANS[corruption], abs=1e-6)


def test_corruption_error_sums_over_the_evaluated_severities():
    # fog AlexNet errors at severities 1 and 3: 0.67474, 0.84378
    assert corruption_error({1: 0.5, 3: 0.6}, 'fog') == pytest.approx(1.1 / (0.67474 + 0.84378))
    all_five = {s: 0.4 for s in range(1, 6)}
    assert corruption_error(all_five, 'brightness') == pytest.approx(0.4 / 0.564592)


def test_relative_corruption_error():
    # (0.5 - 0.2) + (0.6 - 0.2) over (0.67474 - 0.4348) + (0.84378 - 0.4348)
    expected = 0.7 / (0.67474 + 0.84378 - 2 * ALEXNET_CLEAN_ERROR)
    assert relative_corruption_error({1: 0.5, 3: 0.6}, 0.2, 'fog') == pytest.approx(expected)


def test_extra_corruptions_have_no_corruption_error():
    with pytest.raises(ValueError, match='15 benchmark'):
        corruption_error({1: 0.5}, 'spatter')


def test_summary_keeps_extras_out_of_mce_and_mca():
    cells = {('fog', 1): 60.0, ('fog', 2): 40.0, ('contrast', 1): 80.0, ('contrast', 2): 70.0,
             ('spatter', 1): 10.0, ('spatter', 2): 20.0}
    summary = summarize_robustness(cells, clean_accuracy=80.0)
    assert summary['top1/fog'] == pytest.approx(50.0)
    assert summary['top1/contrast'] == pytest.approx(75.0)
    assert summary['top1/spatter'] == pytest.approx(15.0)
    ce_fog = 100 * (0.4 + 0.6) / (0.67474 + 0.7605)
    ce_contrast = 100 * (0.2 + 0.3) / (0.64548 + 0.7615)
    assert summary['CE/fog'] == pytest.approx(ce_fog)
    assert summary['CE/contrast'] == pytest.approx(ce_contrast)
    assert 'CE/spatter' not in summary
    assert summary['mCE'] == pytest.approx((ce_fog + ce_contrast) / 2)
    assert summary['mCA'] == pytest.approx(62.5)
    assert summary['mCA_all'] == pytest.approx((50 + 75 + 15) / 3)
    assert summary['retention'] == pytest.approx(100 * 62.5 / 80)
    assert summary['retention_all'] == pytest.approx(100 * (140 / 3) / 80)
    rel_fog = 100 * ((0.4 - 0.2) + (0.6 - 0.2)) / (0.67474 + 0.7605 - 2 * 0.4348)
    rel_contrast = 100 * ((0.2 - 0.2) + (0.3 - 0.2)) / (0.64548 + 0.7615 - 2 * 0.4348)
    assert summary['relative_mCE'] == pytest.approx((rel_fog + rel_contrast) / 2)


def test_summary_without_clean_accuracy_has_no_retention():
    summary = summarize_robustness({('fog', 1): 50.0})
    assert 'retention' not in summary and 'relative_mCE' not in summary
    assert summary['mCE'] == pytest.approx(100 * 0.5 / 0.67474)


def _sample(scores, label, corruption=None, severity=None):
    sample = dict(pred_score=torch.tensor(scores, dtype=torch.float),
                  gt_label=torch.tensor([label]))
    if corruption is not None:
        sample.update(corruption=corruption, severity=severity)
    return sample


def test_metric_groups_cells_and_reports_summary():
    metric = RobustnessAccuracy(clean_accuracy=100.0)
    metric.dataset_meta = dict(classes=('a', 'b', 'c'), corruptions=('fog', 'contrast'))
    samples = [
        _sample([0.1, 0.8, 0.1], 1, 'fog', 1),  # right
        _sample([0.7, 0.2, 0.1], 1, 'fog', 1),  # wrong
        _sample([0.1, 0.1, 0.8], 2, 'fog', 2),  # right
        _sample([0.6, 0.3, 0.1], 0, 'contrast', 1),  # right
    ]
    metric.process({}, samples)
    metrics = metric.compute_metrics(metric.results)
    assert metrics['top1'] == pytest.approx(75.0)
    assert metrics['top1/fog/1'] == pytest.approx(50.0)
    assert metrics['top1/fog/2'] == pytest.approx(100.0)
    assert metrics['top1/contrast/1'] == pytest.approx(100.0)
    assert metrics['mCA'] == pytest.approx((75.0 + 100.0) / 2)
    assert metrics['retention'] == pytest.approx(87.5)
    ce_fog = 100 * (0.5 + 0.0) / (0.67474 + 0.7605)
    assert metrics['mCE'] == pytest.approx((ce_fog + 0.0) / 2)


def test_metric_restricts_predictions_to_the_subset_outputs():
    metric = RobustnessAccuracy(clean_accuracy=50.0)
    # A 200-class style subset: outputs 1 and 3 of a 5-way classifier, labels 0 and 1.
    metric.dataset_meta = dict(classes=('b', 'd'), output_class_indices=(1, 3))
    samples = [
        _sample([0.0, 0.3, 0.9, 0.1, 0.0], 0),  # overall argmax 2 is outside; subset -> 0, right
        _sample([0.0, 0.3, 0.9, 0.1, 0.0], 1),  # subset -> 0, wrong
        _sample([0.9, 0.1, 0.0, 0.2, 0.0], 1),  # subset -> 1, right
    ]
    metric.process({}, samples)
    metrics = metric.compute_metrics(metric.results)
    assert metrics['top1'] == pytest.approx(200 / 3)
    assert metrics['retention'] == pytest.approx(100 * (200 / 3) / 50)


def test_metric_explains_missing_cell_keys_and_small_models():
    metric = RobustnessAccuracy()
    metric.dataset_meta = dict(corruptions=('fog', ))
    with pytest.raises(KeyError, match='PackInputs'):
        metric.process({}, [_sample([0.2, 0.8], 1)])
    metric.dataset_meta = dict(output_class_indices=(1, 999))
    with pytest.raises(ValueError, match='1000-class'):
        metric.process({}, [_sample([0.2, 0.8], 1)])


def test_metric_scores_real_labels_next_to_the_original_label():
    """ReaL top-1: the top-1 prediction is one of the image's reassessed labels; top-1 stays
    the original label's, on the same images."""
    metric = RobustnessAccuracy()
    metric.dataset_meta = dict(classes=('a', 'b', 'c'), real_labels=True)
    samples = [dict(_sample([0.1, 0.8, 0.1], 1), real_labels=[1]),  # both right
               dict(_sample([0.1, 0.8, 0.1], 0), real_labels=[0, 1]),  # ReaL right only
               dict(_sample([0.1, 0.1, 0.8], 2), real_labels=[0]),  # original right only
               dict(_sample([0.8, 0.1, 0.1], 2), real_labels=[1, 2])]  # both wrong
    metric.process({}, samples)
    metrics = metric.compute_metrics(metric.results)
    assert metrics['real_top1'] == pytest.approx(50.0)
    assert metrics['top1'] == pytest.approx(50.0)
    assert [result['real_correct'] for result in metric.results] == [True, True, False, False]


def test_metric_refuses_samples_without_their_real_labels():
    metric = RobustnessAccuracy()
    metric.dataset_meta = dict(real_labels=True)
    with pytest.raises(KeyError, match="'real_labels'.*PackInputs"):
        metric.process({}, [_sample([0.2, 0.8], 1)])
    metric.dataset_meta = {}
    metric.process({}, [dict(_sample([0.2, 0.8], 1), real_labels=[1]), _sample([0.2, 0.8], 1)])
    with pytest.raises(ValueError, match='Some samples carry ReaL labels'):
        metric.compute_metrics(metric.results)
