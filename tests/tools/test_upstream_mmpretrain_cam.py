"""mmpretrain's own Grad-CAM tool (``tools/visualization/vis_cam.py`` of the installed
mmpretrain) on a FAN demo config of ours, run as its users run it."""
import os
import subprocess
import sys
from pathlib import Path

import cv2
import mmpretrain
import numpy as np
import pytest
import torch
from mmcv.transforms import Compose
from mmengine.config import Config
from mmpretrain.registry import MODELS, TRANSFORMS

import stl_mm  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / 'configs' / 'stl' / 'demo' / 'fan_demo_token_labeler.py'
VIS_CAM = Path(mmpretrain.__file__).parent / '.mim' / 'tools' / 'visualization' / 'vis_cam.py'


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory) -> str:
    """A seeded, randomly initialised demo token labeler saved as an mmengine checkpoint."""
    cfg = Config.fromfile(str(CONFIG))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    path = tmp_path_factory.mktemp('cam') / 'labeler.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return str(path)


@pytest.fixture(scope='module')
def garment(tmp_path_factory) -> str:
    """A 28x28 grey PNG like a Fashion-MNIST image: a bright shape on black."""
    image = np.zeros((28, 28), np.uint8)
    image[4:24, 8:20] = 180
    image[4:10, 3:25] = 220
    path = tmp_path_factory.mktemp('cam') / 'garment.png'
    cv2.imwrite(str(path), image)
    return str(path)


def model_view(image_path: str) -> np.ndarray:
    """The image as vis_cam overlays it: the config's test pipeline output, HxWx3 BGR."""
    cfg = Config.fromfile(str(CONFIG))
    pipeline = Compose([TRANSFORMS.build(step) for step in cfg.test_dataloader.dataset.pipeline])
    return pipeline({'img_path': image_path})['inputs'].numpy().transpose(1, 2, 0)


@pytest.mark.parametrize('target, category', [
    # A FAN block: its output is the patch tokens alone (FAN.num_extra_tokens = 0); the
    # predicted category.
    (['--target-layers', 'backbone.blocks.0'], []),
    # vis_cam's default layer, the norm before the last class attention (class token first);
    # a chosen category.
    (['--num-extra-tokens', '1'], ['--target-category', '3']),
])
def test_vis_cam_writes_a_heat_map(checkpoint, garment, tmp_path, target, category):
    """It used to stop on the classifier's ``(logits, None)`` output, on the FAN blocks'
    ``(tokens, hw)`` outputs and on the demo test pipeline, which could not read a file."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    out = tmp_path / 'cam.png'
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO_ROOT)] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
    finished = subprocess.run(
        [sys.executable, str(VIS_CAM), garment, str(CONFIG), checkpoint, *target, *category,
         '--vit-like', '--save-path', str(out)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    written = cv2.imread(str(out))
    size = Config.fromfile(str(CONFIG)).img_size
    assert written is not None and written.shape == (size, size, 3)
    # vis_cam blends the normalised CAM into the image the model saw: the picture must differ
    # from the blend of an empty CAM (an all-zero map would mean no gradient reached the layer).
    src = np.float32(model_view(garment)) / 255
    empty = show_cam_on_image(src, np.zeros(src.shape[:2], np.float32), use_rgb=False)
    assert np.abs(written.astype(int) - empty.astype(int)).max() > 20
