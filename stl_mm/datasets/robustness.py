"""Datasets of the classification robustness suites: ImageNet-1K val, ImageNet-C (published
or generated on the fly), ImageNet-A, ImageNet-R, ImageNet-V2, ImageNet-Sketch and ImageNet-ReaL.

Every dataset labels images by ImageNet-1K class (index into the sorted 1000 wnids shipped in
``data/imagenet_wnids.txt``), except ImageNet-A and -R, whose 200 classes are labelled 0..199 in
sorted-wnid order; their ``metainfo['output_class_indices']`` lists where those classes sit among
the 1000 outputs, so :class:`~stl_mm.evaluation.metrics.robustness.RobustnessAccuracy` restricts
predictions to them (the standard masks of the ImageNet-A/-R evaluation code). ``data/README.md``
gives the source of every class list and how each release's folders map onto the classes.

ImageNet-C samples carry ``corruption`` and ``severity``, ImageNet-ReaL samples ``real_labels``;
keep them with ``PackInputs(meta_keys=(..., 'corruption', 'severity', 'real_labels'))`` so the
metric can use them.
"""
import io
import json
import os
import re
import os.path as osp
from pathlib import Path
from typing import (Callable, Collection, Dict, Iterator, List, Optional, Sequence, Tuple,
                    Union)

import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.fileio import list_from_file
from mmpretrain.datasets import BaseDataset
from mmpretrain.datasets.categories import IMAGENET_CATEGORIES
from PIL import Image

from stl_mm.compat.imagecorruptions import ALL_CORRUPTIONS, SEVERITIES, corrupt, corruption_seed
from stl_mm.registry import register

__all__ = ['IMAGENET_WNIDS', 'IMAGENET_A_WNIDS', 'IMAGENET_R_WNIDS', 'IMAGENET_V2_VARIANTS',
           'REAL_IMAGES', 'WnidImageFolder', 'ImageNetA', 'ImageNetR', 'ImageNetSketch',
           'ImageNetV2', 'ImageNetReaL', 'read_real_labels', 'ImageNetC', 'CorruptedImageNet',
           'ImageCorruption', 'corruption_seed', 'class_folder_files']

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')
_DATA_DIR = Path(__file__).resolve().parent / 'data'


def _read_wnids(filename: str) -> Tuple[str, ...]:
    """The wnids of a shipped class list (``#`` lines state its source)."""
    lines = (line.strip() for line in (_DATA_DIR / filename).read_text().splitlines())
    return tuple(line for line in lines if line and not line.startswith('#'))


#: The 1000 ImageNet-1K wnids in sorted order: class ``i`` of every ImageNet-1K model.
IMAGENET_WNIDS = _read_wnids('imagenet_wnids.txt')
#: The 200 classes of ImageNet-A (Hendrycks et al., 2021), sorted.
IMAGENET_A_WNIDS = _read_wnids('imagenet_a_wnids.txt')
#: The 200 classes of ImageNet-R (Hendrycks et al., 2021), sorted.
IMAGENET_R_WNIDS = _read_wnids('imagenet_r_wnids.txt')
_IMAGENET_INDEX = {wnid: index for index, wnid in enumerate(IMAGENET_WNIDS)}
#: ImageNet-V2's variants and the folder each release tarball unpacks to.
IMAGENET_V2_VARIANTS: Dict[str, str] = {
    'matched-frequency': 'imagenetv2-matched-frequency-format-val',
    'threshold-0.7': 'imagenetv2-threshold0.7-format-val',
    'top-images': 'imagenetv2-top-images-format-val'}
#: Images of the ILSVRC-2012 val set, the length of ReaL's ``real.json``.
REAL_IMAGES = 50000
_VAL_IMAGE = re.compile(r'ILSVRC2012_val_(\d{8})\.JPEG')


def _image_files(folder: str) -> List[str]:
    """Sorted names of the image files directly inside ``folder``."""
    with os.scandir(folder) as entries:
        return sorted(entry.name for entry in entries
                      if entry.is_file() and entry.name.lower().endswith(IMG_EXTENSIONS))


def _subfolders(folder: str) -> List[str]:
    with os.scandir(folder) as entries:
        return sorted(entry.name for entry in entries if entry.is_dir())


def class_folder_files(root: str, known: Collection[str], wanted: Callable[[str], bool],
                       unknown: Callable[[str], str]) -> Iterator[Tuple[str, str, str]]:
    """``(folder, name, path)`` of the wanted files in ``root``'s class folders, sorted.

    Args:
        root: The folder of class folders.
        known: The class folder names allowed.
        wanted: Whether a file name is a sample (hidden files never are).
        unknown: The message of the ``ValueError`` for a folder not in ``known``, from its path.
    """
    for folder in _subfolders(root):
        if folder not in known:
            raise ValueError(unknown(osp.join(root, folder)))
        with os.scandir(osp.join(root, folder)) as entries:
            names = sorted(entry.name for entry in entries if entry.is_file()
                           and not entry.name.startswith('.') and wanted(entry.name))
        for name in names:
            yield folder, name, osp.join(root, folder, name)


def _scan_wnid_folders(root: str, wnids: Sequence[str], what: str) -> List[dict]:
    """``[{'img_path', 'gt_label'}]`` for ``root/<wnid>/<image>``; labels index ``wnids``."""
    if not osp.isdir(root):
        raise FileNotFoundError(f'{what}: folder {root} does not exist; set data_root (and '
                                'data_prefix) to the folder that holds the wnid folders.')
    label_of = {wnid: label for label, wnid in enumerate(wnids)}
    data_list = []
    for folder in _subfolders(root):
        if folder not in label_of:
            raise ValueError(
                f'{what}: {osp.join(root, folder)} is not one of the {len(wnids)} wnids this '
                'dataset knows; the folder must contain one sub-folder per class, named by '
                'its ImageNet wnid (e.g. n01440764).')
        for name in _image_files(osp.join(root, folder)):
            data_list.append({'img_path': osp.join(root, folder, name),
                              'gt_label': label_of[folder]})
    if not data_list:
        raise FileNotFoundError(f'{what}: no images ({", ".join(IMG_EXTENSIONS)}) found in the '
                                f'wnid folders under {root}.')
    return data_list


@register('DATASETS', codebases=('mmpretrain',))
class WnidImageFolder(BaseDataset):
    """ImageNet-style folder ``<data_root>/<data_prefix>/<wnid>/<image>`` labelled by wnid.

    Unlike mmpretrain's ``ImageNet`` it accepts any subset of the class folders (labels still
    index the full class list), which the robustness suites need. mmpretrain's annotation files
    (``ann_file``: lines ``relative/path.JPEG label``) are read as well.

    Args:
        data_root: Root of the data.
        data_prefix: Folder of the wnid folders, relative to ``data_root``.
        ann_file: Optional annotation file (relative to ``data_root``); when set, folders are
            not scanned.
        **kwargs: Other arguments of mmpretrain's ``BaseDataset`` (pipeline, test_mode, ...).
    """
    WNIDS: Tuple[str, ...] = IMAGENET_WNIDS
    METAINFO = {'classes': IMAGENET_CATEGORIES, 'wnids': IMAGENET_WNIDS}

    def __init__(self, data_root: str = '', data_prefix: Union[str, dict] = '',
                 ann_file: str = '', **kwargs) -> None:
        super().__init__(ann_file=ann_file, data_root=data_root, data_prefix=data_prefix,
                         **kwargs)

    def _samples(self) -> List[dict]:
        """Image paths and labels, before any per-suite expansion."""
        if self.ann_file:
            data_list = []
            for line in list_from_file(self.ann_file):
                if not line.strip():
                    continue
                filename, label = line.strip().rsplit(' ', 1)
                data_list.append({'img_path': osp.join(self.img_prefix, filename),
                                  'gt_label': int(label)})
            return data_list
        return _scan_wnid_folders(self.img_prefix, self.WNIDS, type(self).__name__)

    def load_data_list(self) -> List[dict]:
        return self._samples()


class _ImageNet200(WnidImageFolder):
    """Folder of 200 ImageNet classes evaluated with the 1000-way classifier restricted to them."""

    @classmethod
    def _metainfo_for(cls, wnids: Tuple[str, ...]) -> dict:
        indices = tuple(_IMAGENET_INDEX[wnid] for wnid in wnids)
        return {'classes': tuple(IMAGENET_CATEGORIES[index] for index in indices),
                'wnids': wnids, 'output_class_indices': indices}


@register('DATASETS', codebases=('mmpretrain',))
class ImageNetA(_ImageNet200):
    """ImageNet-A (natural adversarial examples): ``<data_root>/<wnid>/<image>``, 200 wnids."""
    WNIDS = IMAGENET_A_WNIDS
    METAINFO = _ImageNet200._metainfo_for(IMAGENET_A_WNIDS)


@register('DATASETS', codebases=('mmpretrain',))
class ImageNetR(_ImageNet200):
    """ImageNet-R (renditions): ``<data_root>/<wnid>/<image>``, 200 wnids."""
    WNIDS = IMAGENET_R_WNIDS
    METAINFO = _ImageNet200._metainfo_for(IMAGENET_R_WNIDS)


def _require_every_class(data_list: List[dict], what: str, root: str, fix: str) -> None:
    """Refuse a tree in which some of the 1000 classes have no image (the releases have all)."""
    present = {info['gt_label'] for info in data_list}
    missing = [IMAGENET_WNIDS[label] for label in range(len(IMAGENET_WNIDS))
               if label not in present]
    if missing:
        shown = ', '.join(missing[:3]) + (', ...' if len(missing) > 3 else '')
        raise ValueError(
            f'{what}: {root} has images of {len(IMAGENET_WNIDS) - len(missing)} of the 1000 '
            f'classes; {len(missing)} class folders are missing or empty ({shown}). {fix}, '
            'or set require_all_classes=False in the suites file to score a subset.')


@register('DATASETS', codebases=('mmpretrain',))
class ImageNetSketch(WnidImageFolder):
    """ImageNet-Sketch: ``<data_root>/<data_prefix>/<wnid>/<image>``, all 1000 classes.

    ``ImageNet-Sketch.zip`` unpacks to ``sketch/<wnid>/`` (50,889 images); labels index the
    1000 ImageNet-1K classes.

    Args:
        data_root, data_prefix, ann_file: As :class:`WnidImageFolder`.
        require_all_classes: Refuse a tree in which a class folder is missing or empty (an
            incomplete download); False scores whatever classes are there.
        **kwargs: Other arguments of mmpretrain's ``BaseDataset``.
    """

    def __init__(self, data_root: str = '', data_prefix: Union[str, dict] = '',
                 ann_file: str = '', require_all_classes: bool = True, **kwargs) -> None:
        self.require_all_classes = require_all_classes
        super().__init__(data_root=data_root, data_prefix=data_prefix, ann_file=ann_file,
                         **kwargs)

    def load_data_list(self) -> List[dict]:
        data_list = self._samples()
        if self.require_all_classes:
            _require_every_class(data_list, 'ImageNet-Sketch', self.img_prefix,
                                 'Re-extract ImageNet-Sketch.zip and point data_root at its '
                                 'sketch/ folder')
        return data_list


def _is_class_index(name: str) -> bool:
    return name.isdigit() and str(int(name)) == name and int(name) < len(IMAGENET_WNIDS)


@register('DATASETS', codebases=('mmpretrain',))
class ImageNetV2(BaseDataset):
    """ImageNet-V2: ``<data_root>/<variant folder>/<class index>/<image>``.

    The class folders are named by ImageNet-1K class index (``0`` .. ``999``), and folder ``k``
    is labelled ``k`` as a number: their sorted-as-text order (``0, 1, 10, 100, ...``) is not
    the class order.

    Args:
        data_root: The folder holding the unpacked tarballs' folders
            (:data:`IMAGENET_V2_VARIANTS`).
        variant: ``'matched-frequency'``, ``'threshold-0.7'`` or ``'top-images'``.
        data_prefix: The variant's folder under ``data_root``; defaults to the release's name.
        require_all_classes: Refuse a tree in which a class folder is missing or empty.
        **kwargs: Other arguments of mmpretrain's ``BaseDataset``.
    """
    METAINFO = {'classes': IMAGENET_CATEGORIES, 'wnids': IMAGENET_WNIDS}

    def __init__(self, data_root: str = '', variant: str = 'matched-frequency',
                 data_prefix: Optional[str] = None, require_all_classes: bool = True,
                 **kwargs) -> None:
        if variant not in IMAGENET_V2_VARIANTS:
            raise ValueError(f'ImageNet-V2 has no variant {variant!r}; choose from '
                             f'{list(IMAGENET_V2_VARIANTS)}.')
        self.variant, self.require_all_classes = variant, require_all_classes
        prefix = IMAGENET_V2_VARIANTS[variant] if data_prefix is None else data_prefix
        super().__init__(ann_file='', data_root=data_root, data_prefix=prefix, **kwargs)

    def load_data_list(self) -> List[dict]:
        what, root = f'ImageNet-V2 ({self.variant})', self.img_prefix
        if not osp.isdir(root):
            inside = osp.isdir(self.data_root) and any(
                _is_class_index(name) for name in _subfolders(self.data_root))
            raise FileNotFoundError(
                f'{what}: folder {root} does not exist; set data_root to the folder that holds '
                f'{IMAGENET_V2_VARIANTS[self.variant]}/ (the unpacked release tarball)' +
                (f'; {self.data_root} itself holds class folders, so use its parent.'
                 if inside else '.'))
        folders = _subfolders(root)
        for folder in folders:
            if not _is_class_index(folder):
                raise ValueError(
                    f'{what}: {osp.join(root, folder)} is not a class folder: ImageNet-V2 names '
                    'them by ImageNet-1K class index, 0 to 999 (a wnid-named tree is read by '
                    'WnidImageFolder).')
        data_list = [{'img_path': osp.join(root, folder, name), 'gt_label': int(folder)}
                     for folder in sorted(folders, key=int)
                     for name in _image_files(osp.join(root, folder))]
        if not data_list:
            raise FileNotFoundError(f'{what}: no images ({", ".join(IMG_EXTENSIONS)}) in the '
                                    f'class folders under {root}.')
        if self.require_all_classes:
            _require_every_class(data_list, what, root,
                                 f'Re-extract the {self.variant} tarball')
        return data_list


def read_real_labels(path: str) -> List[List[int]]:
    """ReaL's ``real.json``: for each of the 50,000 val images the list of its valid classes.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: It is not a list of 50,000 lists of class indices 0..999.
    """
    where = ('download real.json from github.com/google-research/reassessed-imagenet and set '
             'real_json (configs/robustness/suites.py) to it')
    if not osp.isfile(path):
        raise FileNotFoundError(f'ImageNet-ReaL: {path} does not exist; {where}.')
    try:
        with open(path) as f:
            labels = json.load(f)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f'ImageNet-ReaL: {path} is not JSON ({error}); {where}.')
    if not isinstance(labels, list) or len(labels) != REAL_IMAGES:
        found = f'{len(labels)} entries' if isinstance(labels, list) else 'no list'
        raise ValueError(f'ImageNet-ReaL: {path} holds {found}, but real.json has one list per '
                         f'ILSVRC-2012 val image ({REAL_IMAGES}); {where}.')
    for index, entry in enumerate(labels):
        if not isinstance(entry, list) or not all(
                isinstance(label, int) and 0 <= label < len(IMAGENET_WNIDS) for label in entry):
            raise ValueError(f'ImageNet-ReaL: entry {index} of {path} is {entry!r}, not a list '
                             f'of class indices 0..999; {where}.')
    return labels


@register('DATASETS', codebases=('mmpretrain',))
class ImageNetReaL(WnidImageFolder):
    """The ImageNet-1K val set with ReaL's reassessed labels (``real.json``).

    Each sample keeps its original label (``gt_label``) and gets ``real_labels``, the classes
    ReaL judges correct; images whose ReaL set is empty are left out, so the metric's top-1 is
    the original top-1 on exactly the images ReaL scores. Images are matched to ``real.json``
    by their release name ``ILSVRC2012_val_<n>.JPEG`` (entry ``n - 1``).

    Args:
        data_root, data_prefix, ann_file: As :class:`WnidImageFolder` (the clean val set).
        real_json: ``real.json``, relative to ``data_root`` unless absolute.
        require_all_images: Refuse a val set lacking an image that ``real.json`` labels;
            False scores the labelled images present.
        **kwargs: Other arguments of mmpretrain's ``BaseDataset``.
    """
    # Tells the metric that every sample must carry its ReaL set.
    METAINFO = dict(WnidImageFolder.METAINFO, real_labels=True)

    def __init__(self, data_root: str = '', data_prefix: Union[str, dict] = '',
                 ann_file: str = '', real_json: str = 'real.json',
                 require_all_images: bool = True, **kwargs) -> None:
        self.real_json = real_json if osp.isabs(real_json) else osp.join(data_root, real_json)
        self.require_all_images = require_all_images
        super().__init__(data_root=data_root, data_prefix=data_prefix, ann_file=ann_file,
                         **kwargs)

    def load_data_list(self) -> List[dict]:
        labels = read_real_labels(self.real_json)
        data_list, seen = [], set()
        for info in self._samples():
            match = _VAL_IMAGE.fullmatch(osp.basename(info['img_path']))
            index = int(match.group(1)) - 1 if match else -1
            if not 0 <= index < REAL_IMAGES:
                raise ValueError(
                    f'ImageNet-ReaL: {info["img_path"]} is not named ILSVRC2012_val_<00000001 '
                    f'to {REAL_IMAGES:08d}>.JPEG; real.json labels the val images by that '
                    'number, so point the in-real data root at the original val images.')
            if index in seen:
                raise ValueError(f'ImageNet-ReaL: {osp.basename(info["img_path"])} appears '
                                 f'twice under {self.img_prefix}; remove the copy.')
            seen.add(index)
            if labels[index]:
                data_list.append(dict(info, real_labels=list(labels[index])))
        missing = [index for index, entry in enumerate(labels) if entry and index not in seen]
        if missing and self.require_all_images:
            raise ValueError(
                f'ImageNet-ReaL: {len(missing)} of the {len(missing) + len(data_list)} images '
                f'that {self.real_json} labels are not under {self.img_prefix} (e.g. '
                f'ILSVRC2012_val_{missing[0] + 1:08d}.JPEG); ReaL accuracy is over all of them. '
                'Point data_root at the complete val set, or set require_all_images=False in '
                'the suites file to score the images present.')
        if not data_list:
            raise ValueError(f'ImageNet-ReaL: none of the images under {self.img_prefix} has '
                             f'a label in {self.real_json}.')
        return data_list


def _check_cells(corruptions: Optional[Sequence[str]],
                 severities: Sequence[int]) -> Tuple[Tuple[str, ...], Tuple[int, ...]]:
    corruptions = tuple(ALL_CORRUPTIONS if corruptions is None else corruptions)
    unknown = [name for name in corruptions if name not in ALL_CORRUPTIONS]
    if unknown or not corruptions:
        raise ValueError(f'Unknown corruptions {unknown}; choose from {list(ALL_CORRUPTIONS)}.')
    severities = tuple(int(severity) for severity in severities)
    if not severities or any(severity not in SEVERITIES for severity in severities):
        raise ValueError(f'Severities must be a non-empty subset of 1..5, got {severities}.')
    return corruptions, severities


@register('DATASETS', codebases=('mmpretrain',))
class ImageNetC(BaseDataset):
    """ImageNet-C as published: ``<data_root>/<corruption>/<severity>/<wnid>/<image>``.

    The corruption folders may also sit one level deeper, in category folders as the release
    archives are sometimes unpacked (``<data_root>/noise/gaussian_noise/1/...``).

    Args:
        data_root: Folder holding the corruption folders.
        corruptions: Corruptions to load (default: all 19 that imagecorruptions defines; every
            one must be present).
        severities: Severities to load (default 1..5).
        **kwargs: Other arguments of mmpretrain's ``BaseDataset``.
    """
    METAINFO = {'classes': IMAGENET_CATEGORIES, 'wnids': IMAGENET_WNIDS}

    def __init__(self, data_root: str, corruptions: Optional[Sequence[str]] = None,
                 severities: Sequence[int] = SEVERITIES, **kwargs) -> None:
        self.corruptions, self.severities = _check_cells(corruptions, severities)
        metainfo = dict(kwargs.pop('metainfo', None) or {}, corruptions=self.corruptions,
                        severities=self.severities)
        super().__init__(ann_file='', data_root=data_root, metainfo=metainfo, **kwargs)

    def _corruption_folder(self, corruption: str) -> str:
        candidates = [osp.join(self.data_root, corruption)]
        if osp.isdir(self.data_root):
            candidates += [osp.join(self.data_root, group, corruption)
                           for group in _subfolders(self.data_root)]
        found = [folder for folder in candidates if osp.isdir(folder)]
        if not found:
            raise FileNotFoundError(
                f'ImageNet-C: no folder for {corruption!r} under {self.data_root} (expected '
                f'{osp.join(self.data_root, corruption)}/<severity>/<wnid>/). Download it, or '
                'leave it out with corruptions=[...] (tools/analysis_tools/test_robustness.py '
                '--corruptions).')
        return found[0]

    def load_data_list(self) -> List[dict]:
        data_list = []
        for corruption in self.corruptions:
            folder = self._corruption_folder(corruption)
            for severity in self.severities:
                cell_root = osp.join(folder, str(severity))
                if not osp.isdir(cell_root):
                    raise FileNotFoundError(
                        f'ImageNet-C: severity folder {cell_root} is missing; leave that '
                        'severity out with severities=[...] (--severities).')
                for info in _scan_wnid_folders(cell_root, IMAGENET_WNIDS, 'ImageNet-C'):
                    data_list.append(dict(info, corruption=corruption, severity=severity))
        return data_list


@register('DATASETS', codebases=('mmpretrain',))
class CorruptedImageNet(WnidImageFolder):
    """ImageNet val corrupted at load time, for those without the ImageNet-C download.

    Each clean image appears once per (corruption, severity); the test pipeline must contain
    :class:`ImageCorruption` (after resizing and cropping to 224, as ImageNet-C was made), which
    corrupts it with the per-image seed stored in the sample. Numbers differ slightly from the
    published ImageNet-C: the release stores JPEG (quality 85) re-encodings, and the random draws
    differ; ``ImageCorruption(jpeg_quality=85)`` reproduces the compression step.

    Args:
        data_root, data_prefix, ann_file: As :class:`WnidImageFolder` (the clean val set).
        corruptions: Corruptions (default all 19).
        severities: Severities (default 1..5).
        seed: Base seed; each image's seed also depends on its path, corruption and severity.
        **kwargs: Other arguments of mmpretrain's ``BaseDataset``.
    """

    def __init__(self, data_root: str = '', data_prefix: Union[str, dict] = '',
                 ann_file: str = '', corruptions: Optional[Sequence[str]] = None,
                 severities: Sequence[int] = SEVERITIES, seed: int = 0, **kwargs) -> None:
        self.corruptions, self.severities = _check_cells(corruptions, severities)
        self.seed = seed
        metainfo = dict(kwargs.pop('metainfo', None) or {}, corruptions=self.corruptions,
                        severities=self.severities)
        super().__init__(data_root=data_root, data_prefix=data_prefix, ann_file=ann_file,
                         metainfo=metainfo, **kwargs)

    def load_data_list(self) -> List[dict]:
        clean = self._samples()
        data_list = []
        for corruption in self.corruptions:
            for severity in self.severities:
                for info in clean:
                    # The path relative to the image folder keeps seeds stable across machines.
                    image_key = osp.relpath(info['img_path'], self.img_prefix)
                    data_list.append(dict(
                        info, corruption=corruption, severity=severity,
                        corruption_seed=corruption_seed(self.seed, image_key, corruption,
                                                        severity)))
        return data_list


@register('TRANSFORMS', codebases=('mmpretrain', 'mmseg', 'mmdet'))
class ImageCorruption(BaseTransform):
    """Corrupt ``results['img']`` with imagecorruptions, reproducibly.

    The corruption and severity come from the sample (``results['corruption']`` /
    ``['severity']``, as :class:`CorruptedImageNet` provides) or from the arguments; the seed
    from ``results['corruption_seed']`` or, failing that, from ``seed`` and the image's file
    name (:func:`~stl_mm.compat.imagecorruptions.corruption_seed`), so it does not depend on
    where the data lives, nor on workers or ranks.

    Required keys: ``img``. Modified keys: ``img``.

    Args:
        corruption: Corruption name when samples do not carry one.
        severity: Severity (1..5) when samples do not carry one.
        seed: Base seed when samples do not carry ``corruption_seed``.
        channel_order: Channel order of ``results['img']``: ``'bgr'`` (mmcv's loaders) is
            turned into RGB for the corruption and back, ``'rgb'`` is corrupted as it is, and
            ``'as_loaded'`` corrupts mmcv's BGR array unchanged, as mmdet's COCO-C benchmark
            does (Michaelis et al., 2019).
        jpeg_quality: When set, re-encode the corrupted image as JPEG of this quality, as the
            ImageNet-C release did (85).
    """

    def __init__(self, corruption: Optional[str] = None, severity: Optional[int] = None,
                 seed: int = 0, channel_order: str = 'bgr',
                 jpeg_quality: Optional[int] = None) -> None:
        if corruption is not None:
            _check_cells([corruption], [severity if severity is not None else 1])
        if channel_order not in ('bgr', 'rgb', 'as_loaded'):
            raise ValueError("channel_order must be 'bgr', 'rgb' or 'as_loaded', got "
                             f'{channel_order!r}.')
        self.corruption, self.severity, self.seed = corruption, severity, seed
        self.channel_order, self.jpeg_quality = channel_order, jpeg_quality

    def transform(self, results: dict) -> dict:
        corruption = results.get('corruption', self.corruption)
        severity = results.get('severity', self.severity)
        if corruption is None or severity is None:
            raise KeyError('ImageCorruption needs a corruption and severity: use a corrupted '
                           'dataset (CorruptedImageNet) or set corruption= and severity=.')
        seed = results.get('corruption_seed')
        if seed is None:
            seed = corruption_seed(self.seed, osp.basename(str(results.get('img_path', ''))),
                                   corruption, severity)
        image = results['img']
        rgb = image[..., ::-1] if self.channel_order == 'bgr' and image.ndim == 3 else image
        corrupted = corrupt(np.ascontiguousarray(rgb), corruption, int(severity), int(seed))
        if self.jpeg_quality is not None:
            corrupted = _jpeg_roundtrip(corrupted, self.jpeg_quality)
        if self.channel_order == 'bgr' and corrupted.ndim == 3:
            corrupted = corrupted[..., ::-1]
        results['img'] = np.ascontiguousarray(corrupted)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(corruption={self.corruption}, severity={self.severity}, '
                f'seed={self.seed}, channel_order={self.channel_order!r}, '
                f'jpeg_quality={self.jpeg_quality})')


def _jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format='JPEG', quality=quality, optimize=True)
    buffer.seek(0)
    return np.array(Image.open(buffer))
