"""BatchMixRecord, the recording Mixup / CutMix and aligned token-label mixing."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmpretrain.models.utils.batch_augments import CutMix, Mixup

import stl_mm  # noqa: F401
from stl_mm.models.utils.batch_augments.batch_mix import (BatchMixRecord, RecordingCutMix,
                                                          RecordingMixup, box_coverage,
                                                          mix_token_targets)


def cutmix_record(box, index=(1, 0), size=(64, 64)) -> BatchMixRecord:
    y1, y2, x1, x2 = box
    lam = 1 - (y2 - y1) * (x2 - x1) / (size[0] * size[1])
    return BatchMixRecord('cutmix', lam, torch.tensor(index), box, size)


def test_aligned_cutmix_pastes_partner_labels_exactly_inside_the_box():
    targets = torch.rand(2, 7, 4, 4)
    # 64x64 input, 4x4 grid: 16-pixel tokens; the box covers token rows 1-2, columns 0-1.
    mixed = mix_token_targets(targets, cutmix_record((16, 48, 0, 32)))
    inside = torch.zeros(4, 4, dtype=torch.bool)
    inside[1:3, 0:2] = True
    assert torch.equal(mixed[0][:, inside], targets[1][:, inside])
    assert torch.equal(mixed[1][:, inside], targets[0][:, inside])
    assert torch.equal(mixed[:, :, ~inside], targets[:, :, ~inside])


def test_aligned_cutmix_blends_tokens_the_box_edge_cuts_by_covered_area():
    targets = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    box = (8, 40, 4, 20)
    mixed = mix_token_targets(targets, cutmix_record(box))
    # Rows [0,16) [16,32) [32,48) [48,64) overlap [8,40) by 8, 16, 8, 0 pixels; columns
    # overlap [4,20) by 12, 4, 0, 0 pixels.
    rows = torch.tensor([0.5, 1.0, 0.5, 0.0], dtype=torch.float64)
    cols = torch.tensor([0.75, 0.25, 0.0, 0.0], dtype=torch.float64)
    coverage = rows[:, None] * cols[None, :]
    torch.testing.assert_close(box_coverage(box, (64, 64), (4, 4)), coverage)
    expected = (1 - coverage) * targets + coverage * targets[[1, 0]]
    torch.testing.assert_close(mixed, expected)
    # The partner's share over the grid equals its share of the class target (1 - lam).
    record = cutmix_record(box)
    assert coverage.mean().item() == pytest.approx(1 - record.lam)


def test_aligned_cutmix_equals_area_pooled_pixel_labels():
    """Run the recording CutMix on images whose pixels carry their source image's id, then
    average-pool the per-pixel one-hot source map to the token grid: that is what aligned
    mixing must produce from per-token one-hot targets of the unmixed images."""
    cutmix = RecordingCutMix(alpha=1.0)
    num, size, grid = 5, 48, 6
    for seed in range(10):
        np.random.seed(seed)
        torch.manual_seed(seed)
        ids = torch.arange(num, dtype=torch.float32).view(num, 1, 1, 1)
        ids = ids.expand(num, 3, size, size).clone()
        mixed_images, _ = cutmix(ids, torch.eye(num))
        record = cutmix.last_record
        source = F.one_hot(mixed_images[:, 0].long(), num).permute(0, 3, 1, 2).double()
        expected = F.avg_pool2d(source, size // grid)
        own = torch.eye(num, dtype=torch.float64)[:, :, None, None].expand(num, num, grid,
                                                                           grid)
        torch.testing.assert_close(mix_token_targets(own, record), expected)


def test_aligned_mixup_blends_with_lam():
    targets = torch.rand(3, 4, 2, 2)
    record = BatchMixRecord('mixup', 0.3, torch.tensor([2, 0, 1]), None, (32, 32))
    torch.testing.assert_close(mix_token_targets(targets, record),
                               0.3 * targets + 0.7 * targets[[2, 0, 1]])


@pytest.mark.parametrize('ours, theirs', [
    (RecordingMixup(alpha=0.8), Mixup(alpha=0.8)),
    (RecordingCutMix(alpha=1.0), CutMix(alpha=1.0)),
    (RecordingCutMix(alpha=1.0, cutmix_minmax=[0.2, 0.8]),
     CutMix(alpha=1.0, cutmix_minmax=[0.2, 0.8])),
])
def test_recording_augments_mix_exactly_like_mmpretrain(ours, theirs):
    for seed in range(5):
        images, scores = torch.rand(6, 3, 20, 24), torch.eye(6)
        outputs = []
        for augment in (ours, theirs):
            np.random.seed(seed)
            torch.manual_seed(seed)
            outputs.append(augment(images.clone(), scores))
        torch.testing.assert_close(outputs[0][0], outputs[1][0], rtol=0, atol=0)
        torch.testing.assert_close(outputs[0][1], outputs[1][1], rtol=0, atol=0)
        record = ours.last_record
        assert record.input_size == (20, 24)
        assert sorted(record.index.tolist()) == list(range(6))
        # The mixed class target of sample i is lam on i and 1 - lam on its partner.
        own = outputs[0][1][torch.arange(6), torch.arange(6)]
        partner = outputs[0][1][torch.arange(6), record.index]
        moved = record.index != torch.arange(6)
        torch.testing.assert_close(own[moved], torch.full_like(own[moved], record.lam))
        torch.testing.assert_close(partner[moved], torch.full_like(own[moved],
                                                                   1 - record.lam))


def test_bad_records_and_targets_are_named():
    with pytest.raises(ValueError, match='kind'):
        BatchMixRecord('resizemix', 0.5, torch.tensor([0]), None, (8, 8))
    with pytest.raises(ValueError, match='box'):
        BatchMixRecord('cutmix', 0.5, torch.tensor([0]), None, (8, 8))
    with pytest.raises(ValueError, match='lam'):
        BatchMixRecord('mixup', 1.5, torch.tensor([0]), None, (8, 8))
    with pytest.raises(ValueError, match='long'):
        BatchMixRecord('mixup', 0.5, torch.tensor([0.]), None, (8, 8))
    record = BatchMixRecord('mixup', 0.5, torch.tensor([1, 0]), None, (8, 8))
    with pytest.raises(ValueError, match='N, K, h, w'):
        mix_token_targets(torch.rand(2, 5), record)
    with pytest.raises(ValueError, match='this very batch'):
        mix_token_targets(torch.rand(3, 5, 2, 2), record)
