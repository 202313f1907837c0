"""Make ``imagecorruptions`` 1.1.2 work on numpy 2 and scikit-image >= 0.19, and seed it.

imagecorruptions 1.1.2 (the generator of the corruptions of ImageNet-C, Cityscapes-C and
COCO-C) breaks on today's stack in three places:

* ``glass_blur`` and ``gaussian_blur`` call ``skimage.filters.gaussian(..., multichannel=True)``;
  scikit-image removed ``multichannel`` (its replacement is ``channel_axis=-1``).
* ``fog`` builds its plasma fractal with ``np.float_``, which numpy 2 removed (it was
  ``np.float64``).
* ``impulse_noise`` calls ``skimage.util.random_noise``, which now draws from a fresh
  ``np.random.default_rng()`` instead of numpy's global state, so seeding no longer makes it
  reproducible. Every other corruption draws from the global state.

Importing this module (``import stl_mm`` does) replaces exactly those pieces, in place, in
``imagecorruptions.corruptions``, the package namespace, ``corruption_dict`` and
``corruption_tuple`` (the two tables ``imagecorruptions.corrupt`` dispatches through), so
``imagecorruptions.corrupt`` and mmdet's ``Corrupt`` transform work for all 19 corruptions.
The replacements keep the reference parameters of every severity and, for glass blur and the
fog fractal, the reference random draws in the same order, so a seeded run gives the same image
as the original code under numpy 1.

:func:`corrupt` is the seeded entry point the rest of stl_mm uses, and
:func:`corruption_seed` the one seed of every corrupted image (Cityscapes-C generation, COCO-C,
ImageNet-C on the fly, Fashion-MNIST-C).
"""
import hashlib
import threading
from typing import Callable, Dict, Tuple

import imagecorruptions
import numpy as np
from imagecorruptions import corruptions as _corruptions
from PIL import Image
from skimage.filters import gaussian
from skimage.util import random_noise

__all__ = ['BENCHMARK_CORRUPTIONS', 'EXTRA_CORRUPTIONS', 'ALL_CORRUPTIONS', 'SEVERITIES',
           'MIN_IMAGE_SIZE', 'ORIGINAL_FUNCTIONS', 'corrupt', 'corruption_seed',
           'plasma_fractal', 'glass_blur', 'gaussian_blur', 'impulse_noise']

#: The 15 corruptions of the ImageNet-C benchmark (mCE is averaged over these).
BENCHMARK_CORRUPTIONS: Tuple[str, ...] = (
    'gaussian_noise', 'shot_noise', 'impulse_noise', 'defocus_blur', 'glass_blur', 'motion_blur',
    'zoom_blur', 'snow', 'frost', 'fog', 'brightness', 'contrast', 'elastic_transform',
    'pixelate', 'jpeg_compression')
#: The 4 held-out ("validation") corruptions: reported, never part of mCE.
EXTRA_CORRUPTIONS: Tuple[str, ...] = ('speckle_noise', 'gaussian_blur', 'spatter', 'saturate')
ALL_CORRUPTIONS: Tuple[str, ...] = BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS
SEVERITIES: Tuple[int, ...] = (1, 2, 3, 4, 5)
#: imagecorruptions refuses smaller images; :func:`corrupt` pads them up to this size.
MIN_IMAGE_SIZE = 32

# Reference parameters of imagecorruptions 1.1.2, indexed by severity - 1.
GAUSSIAN_BLUR_SIGMAS = (1, 2, 3, 4, 6)
# (sigma, largest pixel displacement, shuffling passes)
GLASS_BLUR_PARAMS = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))
IMPULSE_NOISE_AMOUNTS = (.03, .06, .09, 0.17, 0.27)

_ORIGINALS_ATTRIBUTE = '_stl_mm_replaced_functions'


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur over the two spatial axes of an HxW or HxWxC float image."""
    return gaussian(image, sigma=sigma, channel_axis=-1 if image.ndim == 3 else None)


def gaussian_blur(x: Image.Image, severity: int = 1) -> np.ndarray:
    """Gaussian blur (held-out corruption) with imagecorruptions' sigmas."""
    blurred = _blur(np.array(x) / 255., GAUSSIAN_BLUR_SIGMAS[severity - 1])
    return np.clip(blurred, 0, 1) * 255


def glass_blur(x: Image.Image, severity: int = 1) -> np.ndarray:
    """Blur, displace pixels locally, blur again, as imagecorruptions 1.1.2 does.

    The reference writes the displacement as a tuple "swap" of two numpy pixel views; the first
    assignment overwrites the pixel the second one reads, so each step really copies the
    neighbour ``(h + dy, w + dx)`` into ``(h, w)``. We keep that behaviour (it is what ImageNet-C
    was generated with) and draw the offsets in the reference order, in one call.
    """
    sigma, max_delta, passes = GLASS_BLUR_PARAMS[severity - 1]
    image = np.uint8(_blur(np.array(x) / 255., sigma) * 255)
    height, width = image.shape[:2]
    rows = np.arange(height - max_delta, max_delta, -1)
    cols = np.arange(width - max_delta, max_delta, -1)
    targets = (rows[:, None] * width + cols[None, :]).ravel().tolist()
    pixels = image.reshape(height * width, -1)
    for _ in range(passes):
        offsets = np.random.randint(-max_delta, max_delta, size=(len(targets), 2))
        sources = np.asarray(targets) + offsets[:, 1] * width + offsets[:, 0]
        for target, source in zip(targets, sources.tolist()):
            pixels[target] = pixels[source]
    return np.clip(_blur(image / 255., sigma), 0, 1) * 255


def impulse_noise(x: Image.Image, severity: int = 1) -> np.ndarray:
    """Salt-and-pepper noise whose randomness comes from numpy's global state, as it once did."""
    seed = np.random.randint(0, 2**32, dtype=np.uint64)
    noisy = random_noise(np.array(x) / 255., mode='s&p', amount=IMPULSE_NOISE_AMOUNTS[severity - 1],
                         rng=np.random.default_rng(seed))
    return np.clip(noisy, 0, 1) * 255


def plasma_fractal(mapsize: int = 256, wibbledecay: float = 3) -> np.ndarray:
    """Diamond-square height map in [0, 1] (float64), the texture of ``fog``.

    Args:
        mapsize: Side of the square map, a power of two.
        wibbledecay: Factor by which the random displacement shrinks at each level.
    """
    if mapsize <= 0 or mapsize & (mapsize - 1):
        raise ValueError(f'plasma_fractal needs a power-of-two mapsize, got {mapsize}')
    heights = np.empty((mapsize, mapsize), dtype=np.float64)
    heights[0, 0] = 0
    step, wibble = mapsize, 100.

    def displaced_mean(four_point_sum: np.ndarray) -> np.ndarray:
        return four_point_sum / 4 + wibble * np.random.uniform(-wibble, wibble,
                                                               four_point_sum.shape)

    while step >= 2:
        half = step // 2
        # Square step: each cell centre from its four corners (the map wraps around).
        corners = heights[0::step, 0::step]
        corner_sum = corners + np.roll(corners, shift=-1, axis=0)
        corner_sum += np.roll(corner_sum, shift=-1, axis=1)
        heights[half::step, half::step] = displaced_mean(corner_sum)
        # Diamond step: each edge midpoint from the two centres and two corners around it.
        centres = heights[half::step, half::step]
        corners = heights[0::step, 0::step]
        horizontal = (centres + np.roll(centres, 1, axis=0)) + (corners +
                                                                np.roll(corners, -1, axis=1))
        heights[0::step, half::step] = displaced_mean(horizontal)
        vertical = (centres + np.roll(centres, 1, axis=1)) + (corners +
                                                              np.roll(corners, -1, axis=0))
        heights[half::step, 0::step] = displaced_mean(vertical)
        step //= 2
        wibble /= wibbledecay
    heights -= heights.min()
    return heights / heights.max()


def _apply_patch() -> Dict[str, Callable]:
    """Install the replacements once, wherever ``imagecorruptions`` looks them up.

    Returns:
        The reference functions that were replaced, by name.
    """
    if hasattr(imagecorruptions, _ORIGINALS_ATTRIBUTE):  # patched by an earlier import
        return getattr(imagecorruptions, _ORIGINALS_ATTRIBUTE)
    originals = {}
    corruption_fixes = {'glass_blur': glass_blur, 'gaussian_blur': gaussian_blur,
                        'impulse_noise': impulse_noise}
    for name, fixed in corruption_fixes.items():
        originals[name] = getattr(_corruptions, name)
        setattr(_corruptions, name, fixed)
        setattr(imagecorruptions, name, fixed)
        imagecorruptions.corruption_dict[name] = fixed
    imagecorruptions.corruption_tuple = tuple(
        corruption_fixes.get(function.__name__, function)
        for function in imagecorruptions.corruption_tuple)
    # fog looks its fractal up in the module at call time.
    originals['plasma_fractal'] = _corruptions.plasma_fractal
    _corruptions.plasma_fractal = plasma_fractal
    setattr(imagecorruptions, _ORIGINALS_ATTRIBUTE, originals)
    return originals


#: Reference implementations that the patch replaced (for comparison and debugging).
ORIGINAL_FUNCTIONS: Dict[str, Callable] = _apply_patch()

# numpy's global random state is process-wide: one seeded corruption at a time per process.
_GLOBAL_RNG_LOCK = threading.Lock()


def corruption_seed(base_seed: int, image_key: str, corruption: str, severity: int) -> int:
    """The seed of one corrupted image: fixed by its arguments alone.

    It does not depend on which other images, cells, workers or ranks exist, so any cell can be
    recomputed alone and resumed runs agree. (Python's ``hash`` is salted per process; SHA-256
    is not.)

    Args:
        base_seed: The run's seed (``--seed``).
        image_key: Names the image independently of where the data lives: its path relative to
            the image folder, its file name, or its index in a fixed dataset.
        corruption: Corruption name.
        severity: 1 to 5.

    Returns:
        A seed in ``[0, 2**32)``.
    """
    key = f'{image_key}|{corruption}|{int(severity)}|{int(base_seed)}'.encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], 'little')


def corrupt(image: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """Corrupt an RGB image reproducibly with one of the 19 imagecorruptions corruptions.

    imagecorruptions draws from numpy's global random state; this seeds that state for the call
    and restores it afterwards, so callers' own randomness is untouched.

    Args:
        image: uint8 array, HxWx3 in RGB order (HxW and HxWx1 grayscale are accepted too and
            corrupted as gray RGB). Images smaller than 32 pixels on a side, which
            imagecorruptions refuses, are reflect-padded to 32 and cropped back.
        name: One of :data:`ALL_CORRUPTIONS`.
        severity: 1 to 5.
        seed: Any non-negative integer; the same (image, name, severity, seed) always gives the
            same result.

    Returns:
        uint8 array with the shape of ``image``.
    """
    if name not in ALL_CORRUPTIONS:
        raise ValueError(f'Unknown corruption {name!r}; choose one of {list(ALL_CORRUPTIONS)}.')
    if severity not in SEVERITIES:
        raise ValueError(f'Severity must be an integer in 1..5, got {severity!r}.')
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise TypeError('corrupt() needs a uint8 numpy array; convert with '
                        f'np.asarray(img, dtype=np.uint8) (got {type(image).__name__} '
                        f'{getattr(image, "dtype", "")}).')
    gray = image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1)
    if not (gray or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f'corrupt() needs an HxWx3 RGB (or HxW gray) image, got shape '
                         f'{image.shape}; drop alpha channels first (e.g. img[..., :3]).')
    height, width = image.shape[:2]
    rgb = np.repeat(image.reshape(height, width, 1), 3, axis=2) if gray else image
    pad_h, pad_w = max(0, MIN_IMAGE_SIZE - height), max(0, MIN_IMAGE_SIZE - width)
    if pad_h or pad_w:
        rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode='reflect' if min(
            height, width) > 1 else 'edge')
    with _GLOBAL_RNG_LOCK:
        saved_state = np.random.get_state()
        try:
            np.random.seed(seed % 2**32)
            result = imagecorruptions.corrupt(np.ascontiguousarray(rgb), severity=severity,
                                              corruption_name=name)
        finally:
            np.random.set_state(saved_state)
    result = result[:height, :width]
    if gray:
        # ITU-R 601 luma, as PIL's convert('L') uses.
        luma = result.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        result = np.clip(np.round(luma), 0, 255).astype(np.uint8).reshape(image.shape)
    return result
