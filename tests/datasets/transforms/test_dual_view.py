"""DualView: teacher and student views share the geometry; only the student is recoloured
or erased. PackDualViewInputs carries the teacher view to the data preprocessor."""
import numpy as np
import pytest
import torch
from mmcv.transforms import Compose
from mmpretrain.datasets.transforms.auto_augment import RANDAUG_POLICIES
from mmpretrain.registry import TRANSFORMS

import stl_mm  # noqa: F401
from stl_mm.datasets.transforms import DualView, PackDualViewInputs

# Fill colour of the geometric ops; absent from the test image, so filled pixels are known.
PAD = (1, 2, 3)
GEOMETRIC = ('Rotate', 'Shear', 'Translate')
SHARED = [
    dict(type='RandomResizedCrop', scale=32, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
]
ERASING = dict(type='RandomErasing', erase_prob=1.0, mode='const', fill_color=(0, 0, 0),
               min_area_ratio=0.05, max_area_ratio=0.2)


def rand_augment(policies, num_policies: int = 2, interpolation: str = 'bicubic') -> dict:
    return dict(type='RandAugment', policies=policies, num_policies=num_policies,
                total_level=10, magnitude_level=9, magnitude_std=0.5,
                hparams=dict(pad_val=PAD, interpolation=interpolation))


def geometric_policies() -> list:
    return [p for p in RANDAUG_POLICIES['timm_increasing'] if p['type'] in GEOMETRIC]


@pytest.fixture
def image() -> np.ndarray:
    # Values 10..239 only: neither the pad colour, 0 (erasing fill) nor 255.
    return np.random.RandomState(0).randint(10, 240, (40, 56, 3)).astype(np.uint8)


def fill_mask(img: np.ndarray) -> np.ndarray:
    return (img == np.array(PAD, dtype=np.uint8)).all(-1)


def test_views_identical_without_photometric_ops_and_erasing(image):
    dual_view = DualView(shared=SHARED, rand_augment=rand_augment(geometric_policies()))
    moved = 0
    for seed in range(40):
        np.random.seed(seed)
        out = dual_view(dict(img=image.copy()))
        assert out['img'].shape == (32, 32, 3)
        np.testing.assert_array_equal(out['img'], out['teacher_img'])
        moved += int(fill_mask(out['teacher_img']).any())
    # The geometric ops really acted (they fill exposed corners with the pad colour).
    assert moved >= 10


def test_student_view_is_exactly_the_single_view_pipeline(image):
    """With the full timm policy and erasing on, the student view is what mmpretrain's own
    single-view pipeline produces for the same seed: DualView does not disturb the random
    stream, and the teacher's ops draw nothing of their own."""
    policies = 'timm_increasing'
    erasing = dict(ERASING, erase_prob=0.5)
    dual_view = DualView(shared=SHARED, rand_augment=rand_augment(policies),
                         student_only=[erasing])
    single_view = Compose(
        [TRANSFORMS.build(step) for step in [*SHARED, rand_augment(policies), erasing]])
    differ = 0
    for seed in range(30):
        np.random.seed(seed)
        out = dual_view(dict(img=image.copy()))
        after_dual = np.random.rand()
        np.random.seed(seed)
        expected = single_view(dict(img=image.copy()))
        np.testing.assert_array_equal(out['img'], expected['img'])
        assert np.random.rand() == after_dual
        differ += int(not np.array_equal(out['img'], out['teacher_img']))
    assert differ >= 10


def test_photometric_op_reaches_the_student_only(image):
    """Invert (photometric) interleaved with Rotate and Translate (geometric; with nearest
    interpolation they commute with Invert on image pixels): wherever the teacher shows
    image pixels, the student shows the same pixels, inverted an odd or even number of
    times; wherever the teacher shows fill, so does the student (possibly inverted)."""
    policies = [
        dict(type='Invert', prob=1.0),
        dict(type='Rotate', magnitude_range=(0, 30), prob=1.0),
        dict(type='Translate', magnitude_range=(0, 0.45), direction='horizontal', prob=1.0),
    ]
    dual_view = DualView(shared=SHARED,
                         rand_augment=rand_augment(policies, 3, interpolation='nearest'))
    seen = {'inverted': 0, 'not_inverted': 0, 'filled': 0}
    for seed in range(40):
        np.random.seed(seed)
        out = dual_view(dict(img=image.copy()))
        student = out['img'].astype(int)
        teacher = out['teacher_img'].astype(int)
        filled = fill_mask(out['teacher_img'])
        seen['filled'] += int(filled.any())
        inside = ~filled
        if np.array_equal(student[inside], teacher[inside]):
            seen['not_inverted'] += 1
        else:
            np.testing.assert_array_equal(student[inside], 255 - teacher[inside])
            seen['inverted'] += 1
        pad = np.array(PAD)
        assert np.all((student[filled] == pad).all(-1) | (student[filled] == 255 - pad).all(-1))
    assert min(seen.values()) >= 5, seen


def test_erasing_changes_the_student_only_inside_the_box(image):
    dual_view = DualView(shared=SHARED, rand_augment=rand_augment(geometric_policies()),
                         student_only=[ERASING])
    for seed in range(20):
        np.random.seed(seed)
        out = dual_view(dict(img=image.copy()))
        differs = (out['img'] != out['teacher_img']).any(-1)
        rows, cols = np.nonzero(differs)
        assert rows.size > 0
        y1, y2, x1, x2 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        # The student's box is entirely the erasing fill, and the views agree elsewhere.
        assert (out['img'][y1:y2, x1:x2] == 0).all()
        outside = np.ones_like(differs)
        outside[y1:y2, x1:x2] = False
        np.testing.assert_array_equal(out['img'][outside], out['teacher_img'][outside])
        assert (y2 - y1) * (x2 - x1) <= 0.2 * 32 * 32 + 32


def test_shared_only_gives_two_equal_but_separate_arrays(image):
    dual_view = DualView(shared=SHARED)
    np.random.seed(0)
    out = dual_view(dict(img=image.copy()))
    np.testing.assert_array_equal(out['img'], out['teacher_img'])
    out['img'][:] = 0
    assert out['teacher_img'].any()


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match='RandAugment'):
        DualView(rand_augment=dict(type='RandomFlip', prob=0.5))
    with pytest.raises(KeyError, match='NotAnOp'):
        DualView(geometric_ops=('Rotate', 'NotAnOp'))


def test_pack_dual_view_inputs(image):
    dual_view = DualView(shared=SHARED, rand_augment=rand_augment('timm_increasing'),
                         student_only=[ERASING])
    np.random.seed(3)
    results = dual_view(dict(img=image.copy(), gt_label=4))
    packed = PackDualViewInputs()(results)
    assert packed['inputs'].shape == packed['teacher_inputs'].shape == (3, 32, 32)
    assert torch.equal(packed['teacher_inputs'],
                       torch.from_numpy(results['teacher_img']).permute(2, 0, 1))
    assert torch.equal(packed['inputs'], torch.from_numpy(results['img']).permute(2, 0, 1))
    assert packed['data_samples'].gt_label.tolist() == [4]
    with pytest.raises(KeyError, match='DualView'):
        PackDualViewInputs()(dict(img=image.copy(), gt_label=4))
