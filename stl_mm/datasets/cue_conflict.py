"""The cue-conflict stimuli of the texture-vs-shape study, as released: one folder per shape
category, ``<data_root>/<shape>/<shape><n>-<texture><m>.png`` (e.g. ``cat/cat3-clock1.png``),
16 categories (github.com/rgeirhos/texture-vs-shape, ``stimuli/style-transfer-preprocessed-512``).

The 16-class mapping from ImageNet-1K classes ships as ``data/cue_conflict_categories.json`` beside
this module, with its source.
"""
import json
import os.path as osp
import re
from pathlib import Path
from typing import Dict, List, Tuple

from mmpretrain.datasets import BaseDataset

from stl_mm.datasets.robustness import IMAGENET_WNIDS, class_folder_files
from stl_mm.registry import register

__all__ = ['CUE_CONFLICT_CATEGORIES', 'CUE_CONFLICT_INDICES', 'CueConflict', 'parse_stimulus']

_MAPPING_FILE = Path(__file__).resolve().parent / 'data' / 'cue_conflict_categories.json'
_INDEX = {wnid: index for index, wnid in enumerate(IMAGENET_WNIDS)}


def _read_mapping() -> Dict[str, Tuple[str, ...]]:
    mapping = json.loads(_MAPPING_FILE.read_text())
    return {category: tuple(wnids) for category, wnids in sorted(mapping['categories'].items())}


#: Category -> the wnids of its ImageNet-1K classes (the 16 categories, sorted).
CUE_CONFLICT_CATEGORIES = _read_mapping()
#: Category -> the indices of those classes among the 1000 outputs.
CUE_CONFLICT_INDICES = {category: tuple(_INDEX[wnid] for wnid in wnids)
                        for category, wnids in CUE_CONFLICT_CATEGORIES.items()}
_STIMULUS = re.compile(r'^([a-z]+)(\d+)-([a-z]+)(\d+)\.png$')


def parse_stimulus(name: str) -> Tuple[str, str]:
    """``'cat3-clock1.png'`` -> ``('cat', 'clock')``: shape and texture category.

    Raises:
        ValueError: The name is not ``<shape><n>-<texture><m>.png`` with two of the 16
            categories.
    """
    match = _STIMULUS.match(name)
    if match is None or match.group(1) not in CUE_CONFLICT_CATEGORIES \
            or match.group(3) not in CUE_CONFLICT_CATEGORIES:
        raise ValueError(
            f'Cue-conflict stimulus {name!r} does not parse as <shape><n>-<texture><m>.png with '
            f'shape and texture among the 16 categories ({", ".join(CUE_CONFLICT_CATEGORIES)}).')
    return match.group(1), match.group(3)


@register('DATASETS', codebases=('mmpretrain',))
class CueConflict(BaseDataset):
    """Cue-conflict stimuli labelled by shape, carrying ``shape`` and ``texture``.

    Every image file (``.png``) in a category folder must parse (:func:`parse_stimulus`) and
    have that folder's shape; every folder must be one of the 16 categories; hidden files are
    skipped. ``metainfo['category_indices']`` gives :class:`~stl_mm.evaluation.metrics.
    shape_bias.ShapeBias` the mapping.

    Args:
        data_root: The folder holding the 16 category folders.
        **kwargs: Other arguments of mmpretrain's ``BaseDataset`` (pipeline, test_mode, ...).
    """
    METAINFO = {'classes': tuple(CUE_CONFLICT_CATEGORIES),
                'category_indices': CUE_CONFLICT_INDICES}

    def __init__(self, data_root: str, **kwargs) -> None:
        super().__init__(ann_file='', data_root=data_root, **kwargs)

    def load_data_list(self) -> List[dict]:
        root = self.data_root
        if not osp.isdir(root):
            raise FileNotFoundError(f'Cue-conflict stimuli: folder {root} does not exist; point '
                                    'the shape-bias suite at the folder holding the 16 category '
                                    'folders (texture-vs-shape/stimuli/'
                                    'style-transfer-preprocessed-512).')
        labels = {category: label for label, category in enumerate(CUE_CONFLICT_CATEGORIES)}
        data_list = []
        stimuli = class_folder_files(
            root, labels, lambda name: True,
            lambda path: f'Cue-conflict stimuli: {path} is not one of the 16 categories '
                         f'({", ".join(labels)}); remove it or point data_root at the stimuli '
                         'folder itself.')
        for folder, name, path in stimuli:
            try:
                shape, texture = parse_stimulus(name)
            except ValueError as error:
                raise ValueError(f'{error} (file {path}); remove files that are not '
                                 'stimuli.') from None
            if shape != folder:
                raise ValueError(f'Cue-conflict stimulus {path} has shape {shape!r} but '
                                 f'lies in the {folder!r} folder; the release keeps each '
                                 'stimulus in its shape category folder.')
            data_list.append(dict(img_path=path, gt_label=labels[shape], shape=shape,
                                  texture=texture))
        if not data_list:
            raise FileNotFoundError(f'Cue-conflict stimuli: no stimuli found under {root}.')
        return data_list
