"""mmengine checkpoints save, resume and load under torch >= 2.6 safe loading."""
import pickle
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

import stl_mm  # noqa: F401
from tiny_image_folder import make_image_folder

CONFIG = Path(__file__).resolve().parents[1] / 'data' / 'configs' / 'tiny_fan_cls.py'


def _config(tmp_path: Path, work_dir: Path) -> Config:
    cfg = Config.fromfile(CONFIG)
    root = str(make_image_folder(tmp_path / 'images'))
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = root
    cfg.work_dir = str(work_dir)
    return cfg


def test_safe_loading_still_refuses_arbitrary_globals(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'payload': pickle.PicklingError('not allow-listed')}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)


def test_save_resume_and_load_for_testing(tmp_path):
    work_dir = tmp_path / 'work'
    cfg = _config(tmp_path, work_dir)
    cfg.train_cfg.max_epochs = 1
    Runner.from_cfg(cfg).train()
    checkpoint = work_dir / 'epoch_1.pth'
    # The checkpoint holds mmengine's own non-tensor objects (message hub buffers, numpy).
    loaded = torch.load(checkpoint)
    assert 'message_hub' in loaded and 'ema_state_dict' in loaded

    cfg = _config(tmp_path, work_dir)
    cfg.resume = True
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 8 and runner.epoch == 2  # 4 iterations an epoch, continued from 1
    first = torch.load(checkpoint)['state_dict']
    second = torch.load(work_dir / 'epoch_2.pth')['state_dict']
    assert any(not torch.equal(first[k], second[k]) for k in first)

    cfg = _config(tmp_path, tmp_path / 'test_work')
    cfg.load_from = str(work_dir / 'epoch_2.pth')
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    assert 'accuracy/top1' in metrics
    # With EMAHook in the config, mmengine tests the EMA weights of the checkpoint.
    ema = torch.load(work_dir / 'epoch_2.pth')['ema_state_dict']
    model_state = runner.model.state_dict()
    assert all(torch.equal(model_state[k], ema[f'module.{k}']) for k in second)
