"""TokenLabelingDataPreprocessor: both views normalised, Mixup / CutMix on the student and the
class targets only, and a record of what they did."""
import numpy as np
import pytest
import torch
from mmengine.dataset import default_collate
from mmpretrain.models.utils import ClsDataPreprocessor
from mmpretrain.structures import DataSample

import stl_mm  # noqa: F401
from stl_mm.models.utils import RecordingCutMix, RecordingMixup, TokenLabelingDataPreprocessor
from stl_mm.registry import REGISTRIES

MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]
NUM_CLASSES = 5
MIX_AUGMENTS = dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)])


def make_preprocessor(cls=TokenLabelingDataPreprocessor, batch_augments=MIX_AUGMENTS):
    return cls(mean=MEAN, std=STD, to_rgb=True, num_classes=NUM_CLASSES,
               batch_augments=batch_augments)


def make_batch(num: int = 6, size: int = 16, dual: bool = True, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    students = [torch.randint(0, 256, (3, size, size), generator=generator, dtype=torch.uint8)
                for _ in range(num)]
    batch = dict(inputs=students,
                 data_samples=[DataSample().set_gt_label(i % NUM_CLASSES) for i in range(num)])
    if dual:
        batch['teacher_inputs'] = [
            torch.randint(0, 256, (3, size, size), generator=generator, dtype=torch.uint8)
            for _ in range(num)]
    return batch


def normalise(images) -> torch.Tensor:
    """BGR uint8 -> normalised RGB float, written out independently of mmpretrain."""
    stacked = torch.stack(list(images)).float()
    rgb = stacked[:, [2, 1, 0]]
    return (rgb - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_standard_names_become_recording_augments():
    preprocessor = make_preprocessor()
    kinds = [type(augment) for augment in preprocessor.batch_augments.augments]
    assert kinds == [RecordingMixup, RecordingCutMix]
    assert preprocessor.batch_augments.augments[0].alpha == 0.8
    assert preprocessor.batch_augments.augments[1].alpha == 1.0
    assert REGISTRIES['mmpretrain'].MODELS.get('TokenLabelingDataPreprocessor') is \
        TokenLabelingDataPreprocessor


def test_mix_acts_on_student_and_class_targets_only():
    preprocessor = make_preprocessor()
    seen = set()
    for seed in range(12):
        batch = make_batch(seed=seed)
        student, teacher = normalise(batch['inputs']), normalise(batch['teacher_inputs'])
        one_hot = torch.eye(NUM_CLASSES)[torch.arange(6) % NUM_CLASSES]
        np.random.seed(seed)
        out = preprocessor(batch, training=True)
        record = out['batch_mix']
        seen.add(record.kind)
        # The teacher sees its clean, normalised view.
        torch.testing.assert_close(out['teacher_inputs'], teacher, rtol=0, atol=1e-5)
        # The student and the class targets are mixed as the record says.
        partner = record.index
        if record.kind == 'mixup':
            expected = record.lam * student + (1 - record.lam) * student[partner]
        else:
            y1, y2, x1, x2 = record.box
            expected = student.clone()
            expected[:, :, y1:y2, x1:x2] = student[partner][:, :, y1:y2, x1:x2]
            assert record.lam == pytest.approx(1 - (y2 - y1) * (x2 - x1) / 16 ** 2)
        torch.testing.assert_close(out['inputs'], expected, rtol=0, atol=1e-5)
        scores = torch.stack([sample.gt_score for sample in out['data_samples']])
        torch.testing.assert_close(
            scores, record.lam * one_hot + (1 - record.lam) * one_hot[partner])
        assert record.input_size == (16, 16)
    assert seen == {'mixup', 'cutmix'}


def test_same_batches_as_mmpretrain_for_the_same_seed():
    ours, theirs = make_preprocessor(), make_preprocessor(ClsDataPreprocessor)
    for seed in range(6):
        np.random.seed(seed)
        torch.manual_seed(seed)
        out = ours(make_batch(seed=seed), training=True)
        np.random.seed(seed)
        torch.manual_seed(seed)
        expected = theirs(make_batch(seed=seed, dual=False), training=True)
        torch.testing.assert_close(out['inputs'], expected['inputs'], rtol=0, atol=0)
        for sample, reference in zip(out['data_samples'], expected['data_samples']):
            torch.testing.assert_close(sample.gt_score, reference.gt_score, rtol=0, atol=0)


def test_eval_single_view_and_default_collate():
    preprocessor = make_preprocessor()
    # Validation: no mixing, no record; a single-view batch has no teacher inputs.
    batch = make_batch(dual=False)
    out = preprocessor(batch, training=False)
    assert out['teacher_inputs'] is None and out['batch_mix'] is None
    torch.testing.assert_close(out['inputs'], normalise(batch['inputs']), rtol=0, atol=1e-5)
    # default_collate stacks both views into tensors; both paths give the same result.
    batch = make_batch()
    samples = [dict(inputs=s, teacher_inputs=t) for s, t in
               zip(batch['inputs'], batch['teacher_inputs'])]
    collated = default_collate(samples)
    collated['data_samples'] = batch['data_samples']
    out = preprocessor(collated, training=False)
    torch.testing.assert_close(out['teacher_inputs'], normalise(batch['teacher_inputs']),
                               rtol=0, atol=1e-5)
    torch.testing.assert_close(out['inputs'], normalise(batch['inputs']), rtol=0, atol=1e-5)


def test_no_batch_mix_when_no_augment_ran():
    # probs adds a "no augment" choice with the remaining probability (here all of it).
    preprocessor = make_preprocessor(batch_augments=dict(MIX_AUGMENTS, probs=[0.0, 0.0]))
    batch = make_batch()
    out = preprocessor(batch, training=True)
    assert out['batch_mix'] is None
    torch.testing.assert_close(out['inputs'], normalise(batch['inputs']), rtol=0, atol=1e-5)
    # Without batch augments at all (e.g. a plain config), labels stay hard labels.
    out = make_preprocessor(batch_augments=None)(make_batch(), training=True)
    assert out['batch_mix'] is None and 'gt_score' not in out['data_samples'][0]


def test_unrecordable_augment_runs_but_leaves_no_record():
    preprocessor = make_preprocessor(
        batch_augments=dict(augments=[dict(type='ResizeMix', alpha=1.0)]))
    batch = make_batch()
    np.random.seed(0)
    out = preprocessor(batch, training=True)
    assert out['batch_mix'] is None
    assert not torch.allclose(out['inputs'], normalise(batch['inputs']))
    torch.testing.assert_close(out['teacher_inputs'], normalise(batch['teacher_inputs']),
                               rtol=0, atol=1e-5)
