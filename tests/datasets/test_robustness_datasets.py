"""Robustness datasets on tiny synthetic trees: labels, cells, masks and seeded corruptions."""
from pathlib import Path

import numpy as np
import pytest
from mmpretrain.datasets.categories import IMAGENET_CATEGORIES
from PIL import Image

from stl_mm.compat.imagecorruptions import corrupt
from stl_mm.datasets.robustness import (IMAGENET_A_WNIDS, IMAGENET_R_WNIDS, IMAGENET_WNIDS,
                                        CorruptedImageNet, ImageCorruption, ImageNetA, ImageNetC,
                                        ImageNetR, WnidImageFolder, corruption_seed)

TENCH, GOLDFISH = 'n01440764', 'n01443537'  # ImageNet-1K classes 0 and 1
STINGRAY = 'n01498041'  # class 6, in ImageNet-A and ImageNet-R
JUNCO = 'n01534433'  # class 13, in both
LOAD = dict(type='LoadImageFromFile')


def _write_images(folder: Path, count: int, size: int = 36) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(folder)))
    for index in range(count):
        pixels = rng.integers(0, 256, (size, size + 4, 3)).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f'img{index}.png')


def _infos(dataset) -> list:
    return [dataset.get_data_info(index) for index in range(len(dataset))]


def test_wnid_lists():
    assert len(IMAGENET_WNIDS) == len(set(IMAGENET_WNIDS)) == len(IMAGENET_CATEGORIES) == 1000
    assert list(IMAGENET_WNIDS) == sorted(IMAGENET_WNIDS)
    assert IMAGENET_WNIDS[0] == TENCH and IMAGENET_WNIDS[1] == GOLDFISH
    assert IMAGENET_WNIDS[999] == 'n15075141'  # toilet tissue, the last class
    for subset in (IMAGENET_A_WNIDS, IMAGENET_R_WNIDS):
        assert len(subset) == len(set(subset)) == 200
        assert set(subset) <= set(IMAGENET_WNIDS) and list(subset) == sorted(subset)
    assert IMAGENET_A_WNIDS != IMAGENET_R_WNIDS
    assert GOLDFISH in IMAGENET_R_WNIDS and GOLDFISH not in IMAGENET_A_WNIDS
    assert TENCH not in IMAGENET_R_WNIDS and TENCH not in IMAGENET_A_WNIDS


def test_wnid_folder_labels_index_imagenet_for_any_subset(tmp_path):
    for wnid in (GOLDFISH, JUNCO):
        _write_images(tmp_path / 'val' / wnid, 2)
    dataset = WnidImageFolder(data_root=str(tmp_path), data_prefix='val')
    assert len(dataset) == 4
    assert sorted({info['gt_label'] for info in _infos(dataset)}) == [1, 13]
    assert dataset.metainfo['classes'][13] == IMAGENET_CATEGORIES[13]


def test_wnid_folder_reads_annotation_files(tmp_path):
    _write_images(tmp_path / 'val', 2)
    (tmp_path / 'val.txt').write_text('img0.png 7\nimg1.png 999\n')
    dataset = WnidImageFolder(data_root=str(tmp_path), data_prefix='val', ann_file='val.txt')
    assert [info['gt_label'] for info in _infos(dataset)] == [7, 999]


def test_wnid_folder_rejects_unknown_folders(tmp_path):
    _write_images(tmp_path / 'val' / 'cats', 1)
    with pytest.raises(ValueError, match='cats'):
        WnidImageFolder(data_root=str(tmp_path), data_prefix='val')


def test_imagenet_c_published_layout(tmp_path):
    for corruption in ('fog', 'contrast'):
        for severity in (1, 2):
            for wnid in (TENCH, STINGRAY, JUNCO):
                _write_images(tmp_path / corruption / str(severity) / wnid, 2)
    dataset = ImageNetC(data_root=str(tmp_path), corruptions=['fog', 'contrast'],
                        severities=[1, 2])
    assert len(dataset) == 2 * 2 * 3 * 2
    assert dataset.metainfo['corruptions'] == ('fog', 'contrast')
    cells = {(info['corruption'], info['severity']) for info in _infos(dataset)}
    assert cells == {('fog', 1), ('fog', 2), ('contrast', 1), ('contrast', 2)}
    for info in _infos(dataset):
        wnid = Path(info['img_path']).parent.name
        assert info['gt_label'] == IMAGENET_WNIDS.index(wnid)
        cell = (info['corruption'], str(info['severity']))
        assert Path(info['img_path']).parts[-4:-2] == cell
    one_cell = ImageNetC(data_root=str(tmp_path), corruptions=['contrast'], severities=[2])
    assert len(one_cell) == 6
    assert {(i['corruption'], i['severity']) for i in _infos(one_cell)} == {('contrast', 2)}


def test_imagenet_c_category_folders_and_clear_errors(tmp_path):
    _write_images(tmp_path / 'weather' / 'fog' / '3' / TENCH, 1)
    dataset = ImageNetC(data_root=str(tmp_path), corruptions=['fog'], severities=[3])
    assert len(dataset) == 1 and _infos(dataset)[0]['gt_label'] == 0
    with pytest.raises(FileNotFoundError, match='corruptions='):
        ImageNetC(data_root=str(tmp_path), corruptions=['snow'], severities=[3])
    with pytest.raises(FileNotFoundError, match='severities='):
        ImageNetC(data_root=str(tmp_path), corruptions=['fog'], severities=[1])
    with pytest.raises(ValueError, match='Unknown corruptions'):
        ImageNetC(data_root=str(tmp_path), corruptions=['rain'])


@pytest.mark.parametrize('dataset_type,wnids', [(ImageNetA, IMAGENET_A_WNIDS),
                                                (ImageNetR, IMAGENET_R_WNIDS)])
def test_imagenet_a_and_r_label_their_200_classes(tmp_path, dataset_type, wnids):
    for wnid in (STINGRAY, JUNCO):
        _write_images(tmp_path / wnid, 1)
    dataset = dataset_type(data_root=str(tmp_path))
    indices = dataset.metainfo['output_class_indices']
    assert len(indices) == len(dataset.metainfo['classes']) == 200
    for info in _infos(dataset):
        wnid = Path(info['img_path']).parent.name
        assert wnids[info['gt_label']] == wnid
        assert indices[info['gt_label']] == IMAGENET_WNIDS.index(wnid)
        assert dataset.metainfo['classes'][info['gt_label']] == \
            IMAGENET_CATEGORIES[IMAGENET_WNIDS.index(wnid)]
    _write_images(tmp_path / TENCH, 1)  # not one of the 200
    with pytest.raises(ValueError, match=TENCH):
        dataset_type(data_root=str(tmp_path))


def _on_the_fly(root: Path, seed: int = 0, **kwargs) -> CorruptedImageNet:
    return CorruptedImageNet(data_root=str(root), data_prefix='val', seed=seed,
                             pipeline=[LOAD, dict(type='ImageCorruption')], **kwargs)


def test_on_the_fly_corruption_is_seeded_per_image(tmp_path):
    for wnid in (TENCH, JUNCO):
        _write_images(tmp_path / 'val' / wnid, 2)
    dataset = _on_the_fly(tmp_path, corruptions=['gaussian_noise', 'fog'], severities=[1, 3])
    assert len(dataset) == 4 * 2 * 2
    first = [dataset[i]['img'] for i in range(len(dataset))]
    again = _on_the_fly(tmp_path, corruptions=['gaussian_noise', 'fog'], severities=[1, 3])
    for index in reversed(range(len(dataset))):  # another order, a fresh dataset
        np.testing.assert_array_equal(again[index]['img'], first[index])
    for index, info in enumerate(_infos(dataset)):
        clean_rgb = np.array(Image.open(info['img_path']))
        image_key = str(Path(info['img_path']).relative_to(tmp_path / 'val'))
        seed = corruption_seed(0, image_key, info['corruption'], info['severity'])
        assert info['corruption_seed'] == seed
        expected = corrupt(clean_rgb, info['corruption'], info['severity'], seed)
        np.testing.assert_array_equal(first[index][..., ::-1], expected)  # loader gives BGR
        assert not np.array_equal(first[index][..., ::-1], clean_rgb)
    other_seed = _on_the_fly(tmp_path, seed=1, corruptions=['gaussian_noise'], severities=[1])
    assert not np.array_equal(other_seed[0]['img'], first[0])


def test_image_corruption_transform_with_fixed_arguments(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3)).astype(np.uint8)
    transform = ImageCorruption(corruption='contrast', severity=5, channel_order='rgb')
    output = transform(dict(img=image.copy(), img_path='x.png'))['img']
    np.testing.assert_array_equal(output, corrupt(image, 'contrast', 5,
                                                  corruption_seed(0, 'x.png', 'contrast', 5)))
    compressed = ImageCorruption(corruption='contrast', severity=5, channel_order='rgb',
                                 jpeg_quality=85)(dict(img=image.copy(), img_path='x.png'))['img']
    assert compressed.shape == image.shape and not np.array_equal(compressed, output)
    with pytest.raises(KeyError, match='CorruptedImageNet'):
        ImageCorruption()(dict(img=image.copy()))


def test_image_corruption_seeds_by_file_name_and_can_keep_the_loaded_channel_order():
    """The seed of an image does not depend on where the data lives; ``as_loaded`` corrupts
    mmcv's BGR array unchanged, as mmdet's COCO-C benchmark does."""
    image = np.random.default_rng(1).integers(0, 256, (40, 40, 3)).astype(np.uint8)
    transform = ImageCorruption(corruption='gaussian_noise', severity=2, seed=4,
                                channel_order='as_loaded')
    here = transform(dict(img=image.copy(), img_path='/data/coco/val2017/000001.jpg'))['img']
    there = transform(dict(img=image.copy(), img_path='/mnt/other/000001.jpg'))['img']
    np.testing.assert_array_equal(here, there)
    seed = corruption_seed(4, '000001.jpg', 'gaussian_noise', 2)
    np.testing.assert_array_equal(here, corrupt(image, 'gaussian_noise', 2, seed))
    with pytest.raises(ValueError, match='as_loaded'):
        ImageCorruption(channel_order='yuv')
