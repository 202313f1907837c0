"""LoadImageFromFileOrArray and the demo test pipeline: one pipeline for arrays and files."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmcv.transforms import Compose
from mmengine.config import Config
from mmpretrain.registry import TRANSFORMS

import stl_mm  # noqa: F401
from stl_mm.datasets.transforms import LoadImageFromFileOrArray

DEMO_CONFIGS = Path(__file__).resolve().parents[3] / 'configs' / 'stl' / 'demo'


def test_reads_a_file_and_keeps_an_array(tmp_path):
    grey = np.arange(35, dtype=np.uint8).reshape(5, 7)
    path = tmp_path / 'grey.png'
    cv2.imwrite(str(path), grey)
    from_file = LoadImageFromFileOrArray()(dict(img_path=str(path)))
    assert from_file['img'].shape == (5, 7, 3) and from_file['ori_shape'] == (5, 7)
    np.testing.assert_array_equal(from_file['img'][..., 1], grey)
    kept = LoadImageFromFileOrArray(to_float32=True)(dict(img=grey))
    assert kept['img'].dtype == np.float32 and kept['img_shape'] == (5, 7)
    np.testing.assert_array_equal(kept['img'], grey)
    assert TRANSFORMS.get('LoadImageFromFileOrArray') is LoadImageFromFileOrArray
    with pytest.raises(FileNotFoundError):
        LoadImageFromFileOrArray()(dict(img_path=str(tmp_path / 'missing.png')))


@pytest.mark.parametrize('name', ['fan_demo_baseline.py', 'fan_demo_token_labeler.py',
                                  'fan_demo_student.py'])
def test_demo_test_pipeline_gives_the_same_input_from_a_file_and_from_the_dataset(
        tmp_path, name):
    """vis_cam.py (and every tool starting from a file) runs
    ``test_dataloader.dataset.pipeline`` on ``{'img_path': ...}``; the demo's pipeline began
    with GrayToBGR and stopped with KeyError 'img'."""
    cfg = Config.fromfile(str(DEMO_CONFIGS / name))
    pipeline = Compose([TRANSFORMS.build(step) for step in cfg.test_dataloader.dataset.pipeline])
    grey = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    path = tmp_path / 'garment.png'
    cv2.imwrite(str(path), grey)
    from_file = pipeline({'img_path': str(path)})['inputs']
    in_memory = pipeline({'img': grey, 'gt_label': 3})['inputs']
    assert from_file.shape == (3, 28, 28) and from_file.dtype == torch.uint8
    assert torch.equal(from_file, in_memory)
