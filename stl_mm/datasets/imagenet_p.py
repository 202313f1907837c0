"""ImageNet-P (Hendrycks & Dietterich, ICLR 2019): perturbation sequences of ImageNet val images,
read from the release or generated on the fly.

The release stores one MP4 video per image: ``<data_root>/<perturbation>/<wnid>/<name>.mp4``
(224x224 frames; 31 frames, 41 for ``translate``; the first frame of a noise sequence is the
clean image). Every frame is one sample, carrying ``sequence`` (``<wnid>/<name>``), ``frame`` (its
index) and ``num_frames``; :class:`LoadSequenceFrame` decodes the video (once per video and
process) and gives the frame as the image, so the model's test pipeline sees frames exactly as
it sees val images. Pack ``sequence`` and ``frame`` for
:class:`~stl_mm.evaluation.metrics.perturbation.PerturbationStability`.

Without the release, :class:`PerturbedImageNet` makes the sequences from the clean val images
with :class:`ImagePerturbation`: a simplified generator following the release's recipe (frame
counts, noise strengths, brightness, shift, angle and scale steps) written on numpy/OpenCV. Its
figures differ from the release: no H.264 compression, other random draws, OpenCV rather than
PIL/torchvision interpolation, and ``motion_blur`` and ``snow`` (ImageMagick motion blur in the
release) and the validation perturbations are not generated.
"""
import os.path as osp
from typing import List, Optional, Tuple, Union

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmpretrain.datasets import BaseDataset
from mmpretrain.datasets.categories import IMAGENET_CATEGORIES

from stl_mm.compat.imagecorruptions import corruption_seed
from stl_mm.datasets.robustness import IMAGENET_WNIDS, WnidImageFolder, class_folder_files
from stl_mm.evaluation.metrics.perturbation import (EXTRA_PERTURBATIONS,
                                                    IMAGENET_P_PERTURBATIONS)
from stl_mm.registry import register

__all__ = ['ALL_PERTURBATIONS', 'GENERATED_PERTURBATIONS', 'sequence_length', 'ImageNetP',
           'PerturbedImageNet', 'LoadSequenceFrame', 'ImagePerturbation', 'perturbation_frame']

ALL_PERTURBATIONS = IMAGENET_P_PERTURBATIONS + EXTRA_PERTURBATIONS
#: Perturbations :class:`ImagePerturbation` can generate.
GENERATED_PERTURBATIONS = ('gaussian_noise', 'shot_noise', 'zoom_blur', 'brightness',
                           'translate', 'rotate', 'tilt', 'scale')
_METAINFO = {'classes': IMAGENET_CATEGORIES, 'wnids': IMAGENET_WNIDS}


def sequence_length(perturbation: str) -> int:
    """Frames of a generated sequence: 41 for translate (shifts -20..20 px), else 31."""
    return 41 if perturbation == 'translate' else 31


def _check_perturbation(perturbation: str, choices=ALL_PERTURBATIONS) -> str:
    if perturbation not in choices:
        raise ValueError(f'Unknown ImageNet-P perturbation {perturbation!r}; choose from '
                         f'{list(choices)}.')
    return perturbation


def _video_frames(path: str) -> List[np.ndarray]:
    """Every frame of a video, BGR uint8 (mmcv's channel order)."""
    capture = cv2.VideoCapture(path)
    frames = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        capture.release()
    return frames


def _frame_count(path: str) -> int:
    capture = cv2.VideoCapture(path)
    try:
        if not capture.isOpened():
            raise ValueError(f'ImageNet-P: cannot open video {path} (OpenCV has no decoder for '
                             'it, or it is damaged); re-extract it.')
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()
    # Containers without a frame count in their header are counted by decoding.
    return count if count > 0 else len(_video_frames(path))


@register('DATASETS', codebases=('mmpretrain',))
class ImageNetP(BaseDataset):
    """One perturbation of the ImageNet-P release, one sample per frame.

    Args:
        data_root: The folder holding the perturbation folders.
        perturbation: The perturbation to load (its folder ``<data_root>/<perturbation>``).
        **kwargs: Other arguments of mmpretrain's ``BaseDataset``.
    """
    METAINFO = _METAINFO

    def __init__(self, data_root: str, perturbation: str, **kwargs) -> None:
        self.perturbation = _check_perturbation(perturbation)
        # A tuple, as ImageNetC's corruptions: mmengine would take a string for a meta file.
        metainfo = dict(kwargs.pop('metainfo', None) or {}, perturbations=(perturbation, ))
        super().__init__(ann_file='', data_root=data_root, metainfo=metainfo, **kwargs)

    def load_data_list(self) -> List[dict]:
        root = osp.join(self.data_root, self.perturbation)
        if not osp.isdir(root):
            raise FileNotFoundError(
                f'ImageNet-P: no folder {root} (expected <data_root>/{self.perturbation}/<wnid>/'
                '<name>.mp4). Download and extract that perturbation, leave it out with '
                '--perturbations, or generate it with --in-p-on-the-fly.')
        labels = {wnid: label for label, wnid in enumerate(IMAGENET_WNIDS)}
        data_list = []
        videos = class_folder_files(
            root, labels, lambda name: name.lower().endswith('.mp4'),
            lambda path: f'ImageNet-P: {path} is not an ImageNet-1K wnid; the perturbation '
                         'folder must hold one folder per class (e.g. n01440764) of MP4 videos.')
        for wnid, name, path in videos:
            count = _frame_count(path)
            if count < 2:
                raise ValueError(f'ImageNet-P video {path} has {count} frames; a sequence '
                                 'needs at least 2. Re-extract it.')
            sequence = f'{wnid}/{osp.splitext(name)[0]}'
            data_list += [dict(img_path=path, gt_label=labels[wnid], sequence=sequence,
                               frame=frame, num_frames=count) for frame in range(count)]
        if not data_list:
            raise FileNotFoundError(f'ImageNet-P: no .mp4 videos in the wnid folders of {root}.')
        return data_list


@register('DATASETS', codebases=('mmpretrain',))
class PerturbedImageNet(WnidImageFolder):
    """ImageNet-P sequences generated from the clean val set, one sample per frame.

    Each clean image gives :func:`sequence_length` frames; the test pipeline must contain
    :class:`ImagePerturbation` after loading (and after resizing the short edge to 256, as the
    release was made), which makes frame ``frame`` with the seed stored in the sample.

    Args:
        data_root, data_prefix, ann_file: As :class:`~stl_mm.datasets.robustness.
            WnidImageFolder` (the clean val set).
        perturbation: One of :data:`GENERATED_PERTURBATIONS`.
        seed: Base seed; each frame's seed also depends on the image's relative path, the
            perturbation and the frame index (not on workers, ranks or other cells).
        **kwargs: Other arguments of mmpretrain's ``BaseDataset``.
    """

    def __init__(self, data_root: str = '', data_prefix: Union[str, dict] = '',
                 ann_file: str = '', perturbation: str = 'gaussian_noise', seed: int = 0,
                 **kwargs) -> None:
        self.perturbation = _check_perturbation(perturbation, GENERATED_PERTURBATIONS)
        self.seed = seed
        metainfo = dict(kwargs.pop('metainfo', None) or {}, perturbations=(perturbation, ))
        super().__init__(data_root=data_root, data_prefix=data_prefix, ann_file=ann_file,
                         metainfo=metainfo, **kwargs)

    def load_data_list(self) -> List[dict]:
        count = sequence_length(self.perturbation)
        data_list = []
        for info in self._samples():
            key = osp.relpath(info['img_path'], self.img_prefix)
            data_list += [dict(info, sequence=key, frame=frame, num_frames=count,
                               perturbation=self.perturbation,
                               perturbation_seed=corruption_seed(self.seed, key,
                                                                 self.perturbation, frame))
                          for frame in range(count)]
        return data_list


@register('TRANSFORMS', codebases=('mmpretrain',))
class LoadSequenceFrame(BaseTransform):
    """Load frame ``results['frame']`` of the video ``results['img_path']`` as ``img`` (BGR).

    The last decoded video is kept per process, so consecutive frames of one video (the order
    of :class:`ImageNetP`) decode it once. A video with another number of frames than its
    header announced is refused.

    Required keys: ``img_path``, ``frame``, ``num_frames``. Added keys: ``img``, ``img_shape``,
    ``ori_shape``.
    """

    def __init__(self) -> None:
        self._cache: Tuple[Optional[str], List[np.ndarray]] = (None, [])

    def transform(self, results: dict) -> dict:
        path = results['img_path']
        if self._cache[0] != path:
            self._cache = (path, _video_frames(path))
        frames = self._cache[1]
        if len(frames) != results['num_frames']:
            raise ValueError(f'ImageNet-P video {path} decodes to {len(frames)} frames but '
                             f'announces {results["num_frames"]}: it is truncated or damaged; '
                             're-extract it.')
        image = frames[results['frame']].copy()
        results.update(img=image, img_shape=image.shape[:2], ori_shape=image.shape[:2])
        return results


def _centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    height, width = image.shape[:2]
    if height < size or width < size:
        raise ValueError(f'ImagePerturbation needs images of at least {size}x{size} (resize the '
                         f'short edge to 256 first), got {width}x{height}.')
    top, left = (height - size) // 2, (width - size) // 2
    return image[top:top + size, left:left + size]


def _warp(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Affine (2x3) or perspective (3x3) warp about the image, black outside."""
    size = (image.shape[1], image.shape[0])
    if matrix.shape == (3, 3):
        return cv2.warpPerspective(image, matrix, size, flags=cv2.INTER_LINEAR, borderValue=0)
    return cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR, borderValue=0)


def _centre_affine(image: np.ndarray, angle: float = 0., scale: float = 1.) -> np.ndarray:
    height, width = image.shape[:2]
    return cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), angle, scale)


def _tilt(image: np.ndarray, degrees: float) -> np.ndarray:
    """The homography of the image plane turned by ``degrees`` about both the horizontal and
    vertical axes, seen by a pinhole camera at the image diagonal's distance."""
    height, width = image.shape[:2]
    focal = np.hypot(width, height)
    angle = np.deg2rad(degrees)
    cos, sin = np.cos(angle), np.sin(angle)
    about_x = np.array([[1, 0, 0], [0, cos, -sin], [0, sin, cos]])
    about_y = np.array([[cos, 0, -sin], [0, 1, 0], [sin, 0, cos]])
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float64)
    centred = np.c_[corners - (width / 2, height / 2), np.zeros(4)]
    turned = centred @ (about_x @ about_y).T + (0, 0, focal)
    projected = focal * turned[:, :2] / turned[:, 2:] + (width / 2, height / 2)
    return cv2.getPerspectiveTransform(corners.astype(np.float32), projected.astype(np.float32))


def perturbation_frame(image: np.ndarray, perturbation: str, frame: int, seed: int,
                       crop_size: int = 224) -> np.ndarray:
    """Frame ``frame`` of the generated sequence of ``image`` (RGB uint8, short edge >= crop).

    Geometric perturbations move the whole image and then take the centre crop, as the release
    did; the others crop first. Noise frames draw fresh noise from ``seed`` (frame 0 is clean).

    Returns:
        The ``crop_size`` square frame, RGB uint8.
    """
    _check_perturbation(perturbation, GENERATED_PERTURBATIONS)
    if not 0 <= frame < sequence_length(perturbation):
        raise ValueError(f'{perturbation} sequences have {sequence_length(perturbation)} '
                         f'frames; frame {frame} does not exist.')
    matrix: Optional[np.ndarray] = None
    if perturbation == 'translate':
        matrix = np.float64([[1, 0, frame - 20], [0, 1, 0]])
    elif perturbation == 'rotate':
        matrix = _centre_affine(image, angle=frame - 15)
    elif perturbation == 'scale':
        matrix = _centre_affine(image, scale=(frame * 2.5 + 40) / 100)
    elif perturbation == 'tilt':
        matrix = _tilt(image, frame - 15)
    if matrix is not None:
        return _centre_crop(_warp(image, matrix), crop_size).copy()
    if perturbation == 'zoom_blur':
        zooms = [_centre_crop(_warp(image, _centre_affine(image, scale=1 + 0.004 * i)),
                              crop_size).astype(np.float64) for i in range(frame + 1)]
        return np.uint8(np.clip(np.mean(zooms, axis=0), 0, 255).round())
    crop = _centre_crop(image, crop_size).astype(np.float64) / 255
    if perturbation == 'brightness':
        hsv = cv2.cvtColor(np.float32(crop), cv2.COLOR_RGB2HSV)
        hsv[..., 2] = np.clip(hsv[..., 2] + (frame - 15) * 0.02, 0, 1)
        crop = np.float64(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB))
    elif frame > 0:
        rng = np.random.default_rng(seed)
        if perturbation == 'gaussian_noise':
            crop = crop + 0.03 * rng.standard_normal(crop.shape)
        else:  # shot_noise
            crop = rng.poisson(crop * 300) / 300
    return np.uint8((np.clip(crop, 0, 1) * 255).round())


@register('TRANSFORMS', codebases=('mmpretrain',))
class ImagePerturbation(BaseTransform):
    """Replace ``img`` by frame ``results['frame']`` of its generated ImageNet-P sequence.

    The perturbation, frame and seed come from the sample (:class:`PerturbedImageNet`).

    Required keys: ``img`` (BGR), ``perturbation``, ``frame``, ``perturbation_seed``. Modified
    keys: ``img``, ``img_shape``.

    Args:
        crop_size: Side of the frames (the release: 224).
    """

    def __init__(self, crop_size: int = 224) -> None:
        self.crop_size = crop_size

    def transform(self, results: dict) -> dict:
        missing = [key for key in ('perturbation', 'frame', 'perturbation_seed')
                   if key not in results]
        if missing:
            raise KeyError(f'ImagePerturbation needs {missing} in the sample: use the '
                           'PerturbedImageNet dataset.')
        rgb = np.ascontiguousarray(results['img'][..., ::-1])
        frame = perturbation_frame(rgb, results['perturbation'], int(results['frame']),
                                   int(results['perturbation_seed']), self.crop_size)
        results['img'] = np.ascontiguousarray(frame[..., ::-1])
        results['img_shape'] = frame.shape[:2]
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(crop_size={self.crop_size})'
