"""The shipped class lists (sources, sizes, packing) and the ImageNet-V2, -Sketch and -ReaL
datasets on small trees laid out like the releases."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stl_mm.datasets.robustness import (IMAGENET_A_WNIDS, IMAGENET_R_WNIDS, IMAGENET_V2_VARIANTS,
                                        IMAGENET_WNIDS, REAL_IMAGES, ImageNetReaL, ImageNetSketch,
                                        ImageNetV2, read_real_labels)

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT / 'stl_mm' / 'datasets' / 'data'
TENCH, GOLDFISH, JUNCO = 'n01440764', 'n01443537', 'n01534433'  # classes 0, 1, 13
CLASS_LISTS = {'imagenet_wnids.txt': 1000, 'imagenet_a_wnids.txt': 200,
               'imagenet_r_wnids.txt': 200}


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path, format='JPEG')


def _infos(dataset) -> list:
    return [dataset.get_data_info(index) for index in range(len(dataset))]


def test_every_class_list_states_its_source_and_has_its_size():
    readme = (DATA_DIR / 'README.md').read_text()
    assert sorted(path.name for path in DATA_DIR.glob('*.txt')) == sorted(CLASS_LISTS)
    for name, size in CLASS_LISTS.items():
        lines = (DATA_DIR / name).read_text().splitlines()
        header = [line for line in lines if line.startswith('#')]
        wnids = [line for line in lines if line and not line.startswith('#')]
        assert lines[0].startswith('#') and any('github.com' in line or 'ILSVRC' in line
                                                for line in header), name
        assert len(wnids) == len(set(wnids)) == size and wnids == sorted(wnids), name
        assert all(len(wnid) == 9 and wnid[0] == 'n' and wnid[1:].isdigit() for wnid in wnids)
        assert f'`{name}` | {size} |' in readme
    assert set(IMAGENET_A_WNIDS) <= set(IMAGENET_WNIDS)
    assert set(IMAGENET_R_WNIDS) <= set(IMAGENET_WNIDS)
    assert len(set(IMAGENET_A_WNIDS) & set(IMAGENET_R_WNIDS)) < 200
    for release in ('ImageNet-V2', 'ImageNet-Sketch', 'ImageNet-ReaL',
                    *IMAGENET_V2_VARIANTS.values()):
        assert release in readme


def test_the_class_lists_are_packed(tmp_path):
    """A built package (what a wheel holds) has every data file beside the datasets module."""
    source = tmp_path / 'src'
    source.mkdir()
    for name in ('setup.py', 'MANIFEST.in', 'model-index.yml'):
        shutil.copy(REPO_ROOT / name, source / name)
    for name in ('stl_mm', 'configs', 'requirements'):
        shutil.copytree(REPO_ROOT / name, source / name,
                        ignore=shutil.ignore_patterns('__pycache__', '.mim'))
    subprocess.run([sys.executable, 'setup.py', '-q', 'build_py', '--build-lib',
                    str(tmp_path / 'lib')], cwd=source, check=True, capture_output=True)
    packed = tmp_path / 'lib' / 'stl_mm' / 'datasets' / 'data'
    assert sorted(path.name for path in packed.iterdir()) == sorted(
        path.name for path in DATA_DIR.iterdir())


def test_v2_folders_are_class_indices_read_as_numbers(tmp_path):
    root = tmp_path / IMAGENET_V2_VARIANTS['threshold-0.7']
    for folder in ('2', '10', '100', '999'):
        _image(root / folder / 'a.jpeg')
    dataset = ImageNetV2(data_root=str(tmp_path), variant='threshold-0.7',
                         require_all_classes=False)
    # Sorted as text the folders are 10, 100, 2, 999: labelling by position would be wrong.
    assert [(Path(info['img_path']).parent.name, info['gt_label']) for info in _infos(dataset)] \
        == [('2', 2), ('10', 10), ('100', 100), ('999', 999)]
    # Class 2 (n01484850) is there; the message names the first three missing.
    with pytest.raises(ValueError, match=r'996 class folders are missing or empty \(n01440764, '
                                         r'n01443537, n01491361, \.\.\.\).*threshold-0\.7'):
        ImageNetV2(data_root=str(tmp_path), variant='threshold-0.7')


@pytest.mark.parametrize('folder', ['1000', '007', '-1', TENCH])
def test_v2_refuses_folders_that_are_not_class_indices(tmp_path, folder):
    _image(tmp_path / IMAGENET_V2_VARIANTS['matched-frequency'] / folder / 'a.jpeg')
    with pytest.raises(ValueError, match=f'{folder} is not a class folder.*0 to 999'):
        ImageNetV2(data_root=str(tmp_path), require_all_classes=False)


def test_v2_explains_a_data_root_one_level_too_deep(tmp_path):
    variant_folder = tmp_path / IMAGENET_V2_VARIANTS['matched-frequency']
    _image(variant_folder / '0' / 'a.jpeg')
    with pytest.raises(FileNotFoundError, match='itself holds class folders, so use its parent'):
        ImageNetV2(data_root=str(variant_folder))
    with pytest.raises(FileNotFoundError, match='imagenetv2-top-images-format-val/'):
        ImageNetV2(data_root=str(tmp_path), variant='top-images')
    with pytest.raises(ValueError, match="no variant 'threshold0.7'"):
        ImageNetV2(data_root=str(tmp_path), variant='threshold0.7')


def test_sketch_needs_every_class(tmp_path):
    for wnid in (TENCH, JUNCO):
        _image(tmp_path / wnid / 'sketch_0.JPEG')
    (tmp_path / GOLDFISH).mkdir()  # an empty class folder counts as missing
    with pytest.raises(ValueError, match=r'images of 2 of the 1000 classes; 998 class folders.*'
                                         r'\(n01443537, .*ImageNet-Sketch\.zip'):
        ImageNetSketch(data_root=str(tmp_path))
    subset = ImageNetSketch(data_root=str(tmp_path), require_all_classes=False)
    assert sorted(info['gt_label'] for info in _infos(subset)) == [0, 13]
    for wnid in IMAGENET_WNIDS:
        _image(tmp_path / wnid / 'sketch_0.JPEG')
    assert len(ImageNetSketch(data_root=str(tmp_path))) == 1000


def _real_json(path: Path, labels: dict) -> Path:
    entries = [[] for _ in range(REAL_IMAGES)]
    for number, real in labels.items():
        entries[number - 1] = real
    path.write_text(json.dumps(entries))
    return path


def test_real_labels_file_is_checked(tmp_path):
    path = tmp_path / 'real.json'
    with pytest.raises(FileNotFoundError, match='reassessed-imagenet'):
        read_real_labels(str(path))
    path.write_text('[[1], [2')
    with pytest.raises(ValueError, match='is not JSON'):
        read_real_labels(str(path))
    path.write_text(json.dumps([[1]] * 1000))
    with pytest.raises(ValueError, match='holds 1000 entries.*one list per ILSVRC-2012 val image '
                                         r'\(50000\)'):
        read_real_labels(str(path))
    path.write_text(json.dumps([[]] * 49999 + [[1000]]))
    with pytest.raises(ValueError, match=r'entry 49999 .* \[1000\], not a list of class indices'):
        read_real_labels(str(path))
    _real_json(path, {3: [5, 7]})
    labels = read_real_labels(str(path))
    assert len(labels) == REAL_IMAGES and labels[2] == [5, 7] and labels[0] == []


def test_real_keeps_labelled_images_with_their_sets(tmp_path):
    for number, wnid in ((1, TENCH), (2, TENCH), (3, GOLDFISH)):
        _image(tmp_path / 'val' / wnid / f'ILSVRC2012_val_{number:08d}.JPEG')
    _real_json(tmp_path / 'real.json', {1: [0], 3: [1, 13]})  # image 2: no ReaL label
    dataset = ImageNetReaL(data_root=str(tmp_path), data_prefix='val')
    assert [(Path(info['img_path']).name, info['gt_label'], info['real_labels'])
            for info in _infos(dataset)] == [('ILSVRC2012_val_00000001.JPEG', 0, [0]),
                                             ('ILSVRC2012_val_00000003.JPEG', 1, [1, 13])]
    assert dataset.metainfo['real_labels'] is True
    # mmpretrain's flat val/ with meta/val.txt is matched by file name too.
    flat = tmp_path / 'flat'
    for number in (1, 3):
        _image(flat / 'val' / f'ILSVRC2012_val_{number:08d}.JPEG')
    (flat / 'meta').mkdir()
    (flat / 'meta' / 'val.txt').write_text('ILSVRC2012_val_00000001.JPEG 0\n'
                                           'ILSVRC2012_val_00000003.JPEG 1\n')
    flat_dataset = ImageNetReaL(data_root=str(flat), data_prefix='val', ann_file='meta/val.txt',
                                real_json=str(tmp_path / 'real.json'))
    assert [info['real_labels'] for info in _infos(flat_dataset)] == [[0], [1, 13]]


def test_real_refuses_an_incomplete_or_renamed_val_set(tmp_path):
    _image(tmp_path / 'val' / TENCH / 'ILSVRC2012_val_00000001.JPEG')
    _real_json(tmp_path / 'real.json', {1: [0], 7: [3]})
    with pytest.raises(ValueError, match=r'1 of the 2 images that .*real\.json labels are not '
                                         r'under .*ILSVRC2012_val_00000007\.JPEG'):
        ImageNetReaL(data_root=str(tmp_path), data_prefix='val')
    present = ImageNetReaL(data_root=str(tmp_path), data_prefix='val', require_all_images=False)
    assert len(present) == 1
    _image(tmp_path / 'val' / GOLDFISH / 'ILSVRC2012_val_00000001.JPEG')
    with pytest.raises(ValueError, match='ILSVRC2012_val_00000001.JPEG appears twice'):
        ImageNetReaL(data_root=str(tmp_path), data_prefix='val', require_all_images=False)
    shutil.rmtree(tmp_path / 'val' / GOLDFISH)
    _image(tmp_path / 'val' / GOLDFISH / 'goldfish.JPEG')
    with pytest.raises(ValueError, match='goldfish.JPEG is not named ILSVRC2012_val_'):
        ImageNetReaL(data_root=str(tmp_path), data_prefix='val', require_all_images=False)
