"""ImageNet-P (flip probability, top-5 distance, mFR, mT5D) and shape-bias figures on toy inputs
worked out by hand, and the shipped 16-class mapping against its source."""
import json

import pytest
import torch

from stl_mm.datasets.cue_conflict import (CUE_CONFLICT_CATEGORIES, CUE_CONFLICT_INDICES,
                                          _MAPPING_FILE, parse_stimulus)
from stl_mm.datasets.robustness import IMAGENET_WNIDS
from stl_mm.evaluation.metrics.perturbation import (PerturbationStability, frame_pairs,
                                                    sequence_stability, summarize_perturbations,
                                                    top5_distance)
from stl_mm.evaluation.metrics.shape_bias import ShapeBias, category_decision, shape_bias_summary

# Two toy sequences of four frames, each frame's five best classes (best first).
SEQUENCE_A = [[1, 2, 3, 4, 5], [1, 2, 3, 4, 5], [2, 1, 3, 4, 5], [2, 1, 3, 4, 6]]
SEQUENCE_B = [[7, 8, 9, 10, 11], [8, 9, 10, 11, 12], [8, 9, 10, 11, 12], [7, 8, 9, 10, 11]]


def test_top5_distance_counts_rank_displacements_truncated_at_six():
    assert top5_distance([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]) == 0
    assert top5_distance([1, 2, 3, 4, 5], [2, 1, 3, 4, 5]) == 1 + 1  # a swap moves two
    # Class 7 leaves the top 5 (rank >= 6: |6 - 1|) and the other four move up one each.
    assert top5_distance([7, 8, 9, 10, 11], [8, 9, 10, 11, 12]) == 5 + 4
    # Only where the first frame's classes went counts: 12 entering at rank 5 costs nothing.
    assert top5_distance([8, 9, 10, 11, 12], [7, 8, 9, 10, 11]) == 5 * 1
    with pytest.raises(ValueError, match='5 best classes'):
        top5_distance([1, 2, 3], [1, 2, 3])


def test_temporal_sequences_compare_consecutive_frames():
    assert frame_pairs(4, noise=False) == [(0, 1), (1, 2), (2, 3)]
    # A: flips 0,1,0 (1/3), distances 0,2,1 (mean 1); B: flips 1,0,1 (2/3), distances 9,0,5.
    fp, t5d = sequence_stability([SEQUENCE_A, SEQUENCE_B], noise=False)
    assert fp == pytest.approx(100 * (1 / 3 + 2 / 3) / 2)
    assert t5d == pytest.approx((1 + 14 / 3) / 2)


def test_noise_sequences_compare_every_frame_with_the_clean_first_one():
    assert frame_pairs(4, noise=True) == [(0, 1), (0, 2), (0, 3)]
    # A against its frame 0: flips 0,1,1, distances 0,2,3; B: flips 1,1,0, distances 9,9,0.
    fp, t5d = sequence_stability([SEQUENCE_A, SEQUENCE_B], noise=True)
    assert fp == pytest.approx(100 * (2 / 3 + 2 / 3) / 2)
    assert t5d == pytest.approx((5 / 3 + 6) / 2)


def test_mfr_and_mt5d_normalise_by_alexnet_over_the_benchmark_perturbations():
    stability = {'rotate': (50.0, 17 / 6), 'gaussian_noise': (200 / 3, 23 / 6),
                 'spatter': (10.0, 1.0)}
    # Toy AlexNet figures (the real ones come from the suites file).
    alexnet = {'rotate': dict(flip_probability=25.0, top5_distance=2.0),
               'gaussian_noise': dict(flip_probability=50.0, top5_distance=4.0),
               'spatter': dict(flip_probability=5.0, top5_distance=1.0)}
    summary = summarize_perturbations(stability, alexnet)
    assert summary['FR/rotate'] == pytest.approx(200.0)
    assert summary['FR/gaussian_noise'] == pytest.approx(400 / 3)
    assert summary['T5DR/rotate'] == pytest.approx(100 * 17 / 12)
    assert summary['T5DR/gaussian_noise'] == pytest.approx(100 * 23 / 24)
    assert summary['FR/spatter'] == pytest.approx(200.0)  # reported, but a validation one
    assert summary['mFR'] == pytest.approx((200 + 400 / 3) / 2)
    assert summary['mT5D'] == pytest.approx((100 * 17 / 12 + 100 * 23 / 24) / 2)
    assert summary['mFP'] == pytest.approx((50 + 200 / 3) / 2)
    # Without AlexNet's figures there is no rate at all, rather than a rate of another kind.
    raw = summarize_perturbations(stability)
    assert not [key for key in raw if key.startswith(('FR', 'T5DR', 'mFR')) or key == 'mT5D']
    assert raw['FP/rotate'] == 50.0 and raw['mT5D_raw'] == pytest.approx((17 / 6 + 23 / 6) / 2)


def _frame_sample(sequence: str, frame: int, top5):
    scores = torch.zeros(20)
    scores[torch.tensor(top5)] = torch.tensor([5., 4., 3., 2., 1.])
    return dict(pred_score=scores, sequence=sequence, frame=frame)


def _stability(perturbation: str, samples) -> dict:
    metric = PerturbationStability()
    metric.dataset_meta = dict(perturbations=(perturbation, ))
    metric.process({}, samples)
    return metric.compute_metrics(metric.results)


def test_the_metric_keys_frames_so_order_and_sampler_padding_do_not_matter():
    samples = [_frame_sample(name, j, top5) for name, frames in
               (('a', SEQUENCE_A), ('b', SEQUENCE_B)) for j, top5 in enumerate(frames)]
    # Ranks interleave the frames, and the padding repeats the first ones.
    shuffled = samples[1::2] + samples[::2] + samples[:3]
    metrics = _stability('rotate', shuffled)
    assert metrics['flip_probability'] == pytest.approx(50.0)
    assert metrics['top5_distance'] == pytest.approx(17 / 6)
    assert (metrics['sequences'], metrics['frames']) == (2, 4)
    assert _stability('shot_noise', samples)['flip_probability'] == pytest.approx(200 / 3)


def test_incomplete_or_unequal_sequences_are_refused():
    samples = [_frame_sample('a', j, top5) for j, top5 in enumerate(SEQUENCE_A)]
    with pytest.raises(ValueError, match=r'sequence a lacks frames \[1\]'):
        _stability('rotate', [samples[0]] + samples[2:])
    longer = samples + [_frame_sample('b', j, top5) for j, top5 in
                        enumerate(SEQUENCE_B + [SEQUENCE_B[0]])]
    more = longer + [_frame_sample('c', j, top5) for j, top5 in enumerate(SEQUENCE_A)]
    with pytest.raises(ValueError, match=r'most have 4 frames, 1 not \(b: 5\)'):
        _stability('rotate', more)


def test_shape_bias_counts_shape_among_shape_or_texture_decisions():
    decisions = [('cat', 'clock', 'cat'),    # shape
                 ('cat', 'dog', 'dog'),      # texture
                 ('cat', 'bear', 'knife'),   # neither
                 ('dog', 'cat', 'dog'),      # shape
                 ('dog', 'cat', 'dog'),      # shape
                 ('dog', 'dog', 'dog'),      # no cue conflict: left out
                 ('clock', 'cat', 'cat')]    # texture
    summary = shape_bias_summary(decisions, sorted(CUE_CONFLICT_CATEGORIES))
    assert summary['shape_bias'] == pytest.approx(100 * 3 / 5)
    assert summary['stimuli'] == 6
    assert summary['shape_match'] == pytest.approx(50.0)
    assert summary['texture_match'] == pytest.approx(100 * 2 / 6)
    assert summary['shape_bias/cat'] == pytest.approx(50.0)
    assert summary['shape_bias/dog'] == pytest.approx(100.0)
    assert summary['shape_bias/clock'] == pytest.approx(0.0)
    assert (summary['shape_decisions/cat'], summary['texture_decisions/cat']) == (1, 1)
    assert 'shape_decisions/bear' not in summary  # no stimulus of bear shape
    with pytest.raises(ValueError, match='undefined'):
        shape_bias_summary([('dog', 'dog', 'dog')], ['dog'])


def test_the_decision_averages_probabilities_over_each_category():
    probabilities = torch.zeros(1000)
    probabilities[499] = 0.3  # knife: one class
    probabilities[torch.tensor(CUE_CONFLICT_INDICES['dog'])] = 0.6 / 109  # dog: 109 classes
    # Summed, dog (0.6) would win; averaged, knife (0.3 against 0.0055) does.
    assert category_decision(probabilities, CUE_CONFLICT_INDICES) == 'knife'
    # Ties go to the first category in sorted order.
    assert category_decision(torch.zeros(1000), CUE_CONFLICT_INDICES) == 'airplane'


def test_the_metric_counts_each_stimulus_once():
    metric = ShapeBias()
    metric.dataset_meta = dict(category_indices=CUE_CONFLICT_INDICES)
    cat_scores = torch.zeros(1000)
    cat_scores[281] = 1.0
    samples = [dict(pred_score=cat_scores, img_path='cat/cat1-dog1.png', shape='cat',
                    texture='dog'),
               dict(pred_score=cat_scores, img_path='dog/dog1-cat1.png', shape='dog',
                    texture='cat')]
    metric.process({}, samples + samples[:1])  # padding repeats the first stimulus
    metrics = metric.compute_metrics(metric.results)
    assert metrics['shape_bias'] == pytest.approx(50.0) and metrics['decisions'] == 2


SOURCE_SIZES = {'airplane': 1, 'bear': 4, 'bicycle': 2, 'bird': 49, 'boat': 5, 'bottle': 7,
                'car': 3, 'cat': 6, 'chair': 4, 'clock': 3, 'dog': 109, 'elephant': 2,
                'keyboard': 2, 'knife': 1, 'oven': 1, 'truck': 8}


def test_the_16_class_mapping_matches_its_source():
    shipped = json.loads(_MAPPING_FILE.read_text())
    assert 'texture-vs-shape' in shipped['source'] and shipped['aggregation'] == 'mean'
    assert {c: len(w) for c, w in CUE_CONFLICT_CATEGORIES.items()} == SOURCE_SIZES
    wnids = [wnid for members in CUE_CONFLICT_CATEGORIES.values() for wnid in members]
    assert set(wnids) <= set(IMAGENET_WNIDS)
    assert len(wnids) == len(set(wnids)) == 207  # no class in two categories
    # Spot checks against the source's index lists and the ImageNet class names.
    assert CUE_CONFLICT_INDICES['airplane'] == (404, )  # airliner
    assert CUE_CONFLICT_INDICES['knife'] == (499, )  # cleaver
    assert CUE_CONFLICT_INDICES['oven'] == (766, )  # rotisserie
    assert CUE_CONFLICT_INDICES['cat'] == (281, 282, 283, 284, 285, 286)
    assert CUE_CONFLICT_INDICES['truck'] == (555, 569, 656, 675, 717, 734, 864, 867)


def test_stimulus_names_parse_or_are_refused():
    assert parse_stimulus('cat3-clock1.png') == ('cat', 'clock')
    assert parse_stimulus('airplane10-bicycle2.png') == ('airplane', 'bicycle')
    for name in ('cat3_clock1.png', 'cat3-clock1.jpg', 'tiger1-cat1.png', 'cat-clock.png'):
        with pytest.raises(ValueError, match='does not parse'):
            parse_stimulus(name)
