"""Fixtures on real Fashion-MNIST images: the demo configs and a small random FAN teacher.

Test modules import the fixtures they use (``from fashion_mnist_demo import data_dir``).
"""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from stl_mm.datasets.fashion_mnist import prepare_fashion_mnist

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIGS = REPO_ROOT / 'configs' / 'stl' / 'demo'


def demo_config(name: str, data_dir: str) -> Config:
    """A demo config whose three datasets read ``data_dir``."""
    cfg = Config.fromfile(str(DEMO_CONFIGS / name))
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader]['dataset']['data_prefix'] = data_dir
    return cfg


@pytest.fixture(scope='session')
def data_dir() -> str:
    """The repository's data/fashion_mnist, prepared as ``make demo`` prepares it."""
    path = REPO_ROOT / 'data' / 'fashion_mnist'
    prepare_fashion_mnist(str(path))
    return str(path)


@pytest.fixture(scope='session')
def teacher_checkpoint(tmp_path_factory, data_dir) -> str:
    """A randomly initialised demo token labeler saved as an mmengine checkpoint."""
    from mmpretrain.registry import MODELS
    cfg = demo_config('fan_demo_token_labeler.py', data_dir)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    path = tmp_path_factory.mktemp('teacher') / 'epoch_1.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return str(path)
