"""Token-label quality metrics on hand-made label maps and masks."""
import math

import pytest
import torch

from stl_mm.evaluation.token_label_quality import (TokenLabelCounts, count_token_labels,
                                                   foreground_pixels, foreground_tokens,
                                                   token_label_quality, token_labels)

# One image of class 3 on a 2x3 token grid.
LABELS = torch.tensor([[[3, 3, 1], [3, 0, 0]]])
FOREGROUND = torch.tensor([[[1, 1, 1], [0, 1, 0]]], dtype=torch.bool)
CONFIDENCES = torch.tensor([[[.9, .8, .4], [.7, .3, .6]]])
CLASSES = torch.tensor([3])


def test_counts_and_metrics_of_a_known_label_map():
    counts = count_token_labels(LABELS, CONFIDENCES, CLASSES, FOREGROUND)
    # Labelled as class 3: (0,0) (0,1) (1,0); foreground: (0,0) (0,1) (0,2) (1,1).
    assert (counts.labelled, counts.foreground, counts.labelled_foreground) == (3, 4, 2)
    assert counts.wrong == 2 and counts.tokens == 6
    metrics = counts.metrics()
    assert metrics['precision'] == pytest.approx(2 / 3)
    assert metrics['recall'] == pytest.approx(2 / 4)
    assert metrics['iou'] == pytest.approx(2 / (3 + 4 - 2))
    assert metrics['confidence_correct'] == pytest.approx((.9 + .8) / 2)
    # Wrong foreground labels: (0,2) labelled 1 with .4 and (1,1) labelled 0 with .3.
    assert metrics['confidence_wrong'] == pytest.approx((.4 + .3) / 2)
    assert metrics['foreground_fraction'] == pytest.approx(4 / 6)


def test_counts_pool_over_images_and_batches():
    # A second image of class 0 whose every token is labelled 0 and foreground.
    second = count_token_labels(torch.zeros(1, 2, 3, dtype=torch.long), torch.full((1, 2, 3), .5),
                                torch.tensor([0]), torch.ones(1, 2, 3, dtype=torch.bool))
    pooled = count_token_labels(LABELS, CONFIDENCES, CLASSES, FOREGROUND) + second
    both = count_token_labels(torch.cat([LABELS, torch.zeros(1, 2, 3, dtype=torch.long)]),
                              torch.cat([CONFIDENCES, torch.full((1, 2, 3), .5)]),
                              torch.tensor([3, 0]),
                              torch.cat([FOREGROUND, torch.ones(1, 2, 3, dtype=torch.bool)]))
    assert pooled == both
    assert pooled.metrics()['precision'] == pytest.approx((2 + 6) / (3 + 6))
    assert pooled.metrics()['recall'] == pytest.approx((2 + 6) / (4 + 6))


def test_metrics_without_tokens_to_count_are_nan():
    metrics = TokenLabelCounts().metrics()
    assert all(math.isnan(value) for value in metrics.values())


def test_count_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match='same'):
        count_token_labels(LABELS, CONFIDENCES[:, :1], CLASSES, FOREGROUND)
    with pytest.raises(ValueError, match='one class per image'):
        count_token_labels(LABELS, CONFIDENCES, torch.tensor([3, 1]), FOREGROUND)


def test_foreground_pixels_and_tokens():
    # 4x6 image, 2x2 pixels per token on a 2x3 grid; values above 10 are foreground.
    image = torch.tensor([[[200, 200, 11, 0, 0, 0],
                           [200, 0, 0, 9, 0, 0],
                           [50, 50, 30, 30, 0, 255],
                           [50, 50, 30, 0, 0, 0]]], dtype=torch.uint8)
    pixels = foreground_pixels(image)
    assert pixels.sum() == 12 and not pixels[0, 1, 3]  # 9 is below the threshold
    tokens = foreground_tokens(pixels, (2, 3))
    # Token fractions: 3/4, 1/4, 0 | 4/4, 3/4, 1/4; "most pixels" means more than half.
    assert tokens.tolist() == [[[True, False, False], [True, True, False]]]
    # Colour images count the brightest channel.
    colour = torch.zeros(1, 3, 4, 6)
    colour[0, 2, :2, :2] = 100
    assert foreground_tokens(foreground_pixels(colour), (2, 3)).tolist() == [
        [[True, False, False], [False, False, False]]]


def test_argmax_labels_and_their_confidence():
    logits = torch.zeros(1, 2, 1, 2)
    logits[0, 1, 0, 0] = math.log(3)  # token 0: p = (1/4, 3/4)
    logits[0, 0, 0, 1] = math.log(4)  # token 1: p = (4/5, 1/5)
    labels, confidences = token_labels(logits, 'argmax')
    assert labels.tolist() == [[[1, 0]]]
    assert confidences[0, 0].tolist() == pytest.approx([3 / 4, 4 / 5])


def test_gumbel_labels_follow_the_teacher_probabilities_and_are_seeded():
    logits = torch.zeros(1, 2, 100, 100)
    logits[:, 1] = math.log(3)  # p(class 1) = 3/4 everywhere
    before = torch.random.get_rng_state()
    labels, confidences = token_labels(logits, 'gumbel', seed=7)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert labels.float().mean().item() == pytest.approx(.75, abs=.02)
    expected = torch.where(labels == 1, torch.tensor(.75), torch.tensor(.25))
    assert torch.allclose(confidences, expected)
    assert torch.equal(token_labels(logits, 'gumbel', seed=7)[0], labels)
    assert not torch.equal(token_labels(logits, 'gumbel', seed=8)[0], labels)


def test_token_labels_rejects_bad_input():
    with pytest.raises(ValueError, match='mode'):
        token_labels(torch.zeros(1, 2, 1, 1), 'softmax')
    with pytest.raises(ValueError, match=r'\(N, K, h, w\)'):
        token_labels(torch.zeros(2, 2), 'argmax')


def test_quality_over_batches_with_confident_and_uncertain_teachers():
    # A confident teacher reproducing LABELS: Gumbel draws agree with argmax.
    confident = torch.nn.functional.one_hot(LABELS, 4).permute(0, 3, 1, 2).float() * 50
    results = token_label_quality([(confident, CLASSES, FOREGROUND)] * 2, gumbel_draws=3)
    for mode in ('argmax', 'gumbel'):
        assert results[mode]['precision'] == pytest.approx(2 / 3)
        assert results[mode]['recall'] == pytest.approx(1 / 2)
        assert results[mode]['iou'] == pytest.approx(2 / 5)
    assert results['gumbel']['iou_std'] == pytest.approx(0, abs=1e-12)
    assert results['gumbel']['draws'] == 3
    assert results['argmax']['counts']['tokens'] == 12

    # An uncertain teacher: every token gives the image's class 3 probability 0.6 and class 0
    # probability 0.4. Argmax labels everything as the class; Gumbel keeps about 60%.
    uncertain = torch.full((1, 4, 40, 40), -1e4)
    uncertain[:, 3], uncertain[:, 0] = math.log(.6), math.log(.4)
    foreground = torch.ones(1, 40, 40, dtype=torch.bool)
    results = token_label_quality([(uncertain, CLASSES, foreground)], gumbel_draws=4, seed=1)
    assert results['argmax']['recall'] == 1 and results['argmax']['precision'] == 1
    assert results['argmax']['confidence_correct'] == pytest.approx(.6)
    assert math.isnan(results['argmax']['confidence_wrong'])
    assert results['gumbel']['recall'] == pytest.approx(.6, abs=.03)
    assert results['gumbel']['confidence_correct'] == pytest.approx(.6)
    assert results['gumbel']['confidence_wrong'] == pytest.approx(.4)
    assert 0 < results['gumbel']['recall_std'] < .03
