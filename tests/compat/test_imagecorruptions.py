"""imagecorruptions on numpy 2 / scikit-image 0.26: all 19 corruptions, reference semantics of
the replaced functions, and the seeded ``corrupt``."""
import imagecorruptions
import numpy as np
import pytest
import skimage.filters
from imagecorruptions import corruptions as reference_module
from PIL import Image

from stl_mm.compat import imagecorruptions as compat
from stl_mm.compat.imagecorruptions import (ALL_CORRUPTIONS, BENCHMARK_CORRUPTIONS,
                                            EXTRA_CORRUPTIONS, ORIGINAL_FUNCTIONS, corrupt)


@pytest.fixture(scope='module')
def image() -> np.ndarray:
    """A 40x48 textured RGB image (smooth gradient plus noise, so blurs change it)."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:40, 0:48]
    base = np.stack([rows * 5, cols * 4, (rows + cols) * 3], axis=-1) % 256
    return np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture
def multichannel_gaussian(monkeypatch):
    """Let the reference functions call gaussian(..., multichannel=True) as old skimage did."""

    def gaussian(image, sigma=1, multichannel=None, **kwargs):
        return skimage.filters.gaussian(image, sigma=sigma,
                                        channel_axis=-1 if multichannel else None, **kwargs)

    monkeypatch.setattr(reference_module, 'gaussian', gaussian)


def test_corruption_lists_match_the_package():
    assert len(BENCHMARK_CORRUPTIONS) == 15 and len(EXTRA_CORRUPTIONS) == 4
    assert list(BENCHMARK_CORRUPTIONS) == imagecorruptions.get_corruption_names('common')
    assert list(EXTRA_CORRUPTIONS) == imagecorruptions.get_corruption_names('validation')
    assert list(ALL_CORRUPTIONS) == imagecorruptions.get_corruption_names('all')


def test_patch_is_installed_where_corrupt_dispatches():
    for name in ('glass_blur', 'gaussian_blur', 'impulse_noise'):
        fixed = getattr(compat, name)
        assert imagecorruptions.corruption_dict[name] is fixed
        assert fixed in imagecorruptions.corruption_tuple
        assert getattr(reference_module, name) is fixed
        assert ORIGINAL_FUNCTIONS[name] is not fixed
    assert reference_module.plasma_fractal is compat.plasma_fractal


@pytest.mark.parametrize('name', ALL_CORRUPTIONS)
def test_every_corruption_works_through_the_package(image, name):
    np.random.seed(0)
    output = imagecorruptions.corrupt(image, corruption_name=name, severity=3)
    assert output.dtype == np.uint8 and output.shape == image.shape
    assert not np.array_equal(output, image)


@pytest.mark.parametrize('severity', [1, 2, 3, 4, 5])
def test_glass_blur_reproduces_the_reference(image, severity, multichannel_gaussian):
    np.random.seed(severity)
    expected = ORIGINAL_FUNCTIONS['glass_blur'](Image.fromarray(image), severity)
    np.random.seed(severity)
    np.testing.assert_array_equal(compat.glass_blur(Image.fromarray(image), severity), expected)


@pytest.mark.parametrize('severity', [1, 5])
def test_gaussian_blur_reproduces_the_reference(image, severity, multichannel_gaussian):
    expected = ORIGINAL_FUNCTIONS['gaussian_blur'](Image.fromarray(image), severity)
    np.testing.assert_array_equal(compat.gaussian_blur(Image.fromarray(image), severity),
                                  expected)


@pytest.mark.parametrize('mapsize,decay', [(64, 2.0), (128, 1.4)])
def test_plasma_fractal_reproduces_the_reference(monkeypatch, mapsize, decay):
    monkeypatch.setattr(np, 'float_', np.float64, raising=False)  # what numpy 1 had
    np.random.seed(3)
    expected = ORIGINAL_FUNCTIONS['plasma_fractal'](mapsize=mapsize, wibbledecay=decay)
    np.random.seed(3)
    fractal = compat.plasma_fractal(mapsize=mapsize, wibbledecay=decay)
    assert fractal.dtype == np.float64
    np.testing.assert_array_equal(fractal, expected)


def test_plasma_fractal_rejects_non_power_of_two():
    with pytest.raises(ValueError, match='power-of-two'):
        compat.plasma_fractal(mapsize=48)


@pytest.mark.parametrize('severity,amount', [(1, .03), (5, .27)])
def test_impulse_noise_keeps_the_reference_amount(severity, amount):
    grey = np.full((200, 200, 3), 128, np.uint8)
    noisy = compat.impulse_noise(Image.fromarray(grey), severity)
    flipped = np.mean((noisy == 0) | (noisy == 255))
    assert abs(flipped - amount) < 0.01
    assert np.all((noisy == 0) | (noisy == 255) | (np.round(noisy) == 128))


def test_seeded_corrupt_is_deterministic_and_leaves_global_state_alone(image):
    np.random.seed(123)
    state_before = np.random.get_state()[1].copy()
    first = {name: corrupt(image, name, 2, seed=7) for name in ALL_CORRUPTIONS}
    np.testing.assert_array_equal(np.random.get_state()[1], state_before)
    for name in ALL_CORRUPTIONS:
        np.testing.assert_array_equal(corrupt(image, name, 2, seed=7), first[name])
    # Randomised corruptions change with the seed (impulse_noise included, despite skimage).
    for name in ('gaussian_noise', 'impulse_noise', 'glass_blur', 'fog', 'frost'):
        assert not np.array_equal(corrupt(image, name, 2, seed=8), first[name]), name


@pytest.mark.parametrize('shape', [(20, 24), (20, 24, 1), (20, 24, 3), (33, 45, 3)])
def test_corrupt_handles_gray_and_small_images(shape):
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, shape).astype(np.uint8)
    for name in ('fog', 'zoom_blur', 'frost', 'glass_blur'):
        output = corrupt(small, name, 3, seed=0)
        assert output.shape == small.shape and output.dtype == np.uint8
        assert not np.array_equal(output, small)


def test_corrupt_rejects_bad_input(image):
    with pytest.raises(ValueError, match='Unknown corruption'):
        corrupt(image, 'rain', 1, seed=0)
    with pytest.raises(ValueError, match='Severity'):
        corrupt(image, 'fog', 6, seed=0)
    with pytest.raises(TypeError, match='uint8'):
        corrupt(image.astype(np.float32), 'fog', 1, seed=0)
    with pytest.raises(ValueError, match='alpha'):
        corrupt(np.zeros((40, 40, 4), np.uint8), 'fog', 1, seed=0)


def test_mmdet_corrupt_transform_works_with_the_fixed_corruptions(image):
    from mmdet.datasets.transforms.transforms import Corrupt
    for name in ('glass_blur', 'gaussian_blur', 'fog'):
        results = Corrupt(corruption=name, severity=2)(dict(img=image.copy()))
        assert results['img'].shape == image.shape
        assert not np.array_equal(results['img'], image)
