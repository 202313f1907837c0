"""tools/train.py and tools/test.py: one pair for every codebase, official checkpoints accepted."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import stl_mm  # noqa: F401
from stl_mm.models.backbones.fan_checkpoint import official_to_stl_mm
from tiny_image_folder import make_image_folder

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / 'tests' / 'data' / 'configs' / 'tiny_fan_cls.py'


def _run(*args: str) -> str:
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600,
                            cwd=REPO)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    return log


@pytest.mark.parametrize('use_ema', [True, False])
def test_test_py_accepts_an_official_checkpoint(tmp_path, official_fixtures, use_ema):
    fixture = torch.load(official_fixtures / 'mini_hybrid_token.pt')
    official = tmp_path / 'official.pth.tar'
    torch.save(fixture['checkpoint'], official)
    config = tmp_path / 'mini_hybrid_token.py'
    config.write_text(
        f"_base_ = '{TINY_CONFIG}'\n"
        "model = dict(backbone=dict(arch=dict(embed_dims=64, depth=2, num_heads=4,\n"
        "    hybrid_stem=dict(depths=[1, 1], dims=[32, 48]))),\n"
        "    head=dict(num_classes=10, in_channels=64))\n"
        "pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(64, 64)),\n"
        "            dict(type='PackInputs')]\n"
        f"test_dataloader = dict(dataset=dict(data_root='{make_image_folder(tmp_path / 'img')}',\n"
        "                       pipeline=pipeline))\n"
        "custom_hooks = []\n")
    work_dir = tmp_path / 'work'
    log = _run('tools/test.py', str(config), str(official), '--work-dir', str(work_dir),
               *([] if use_ema else ['--no-ema']), '--out', str(tmp_path / 'preds.pkl'))
    assert 'accuracy/top1' in log
    assert (tmp_path / 'preds.pkl').is_file()
    converted = torch.load(work_dir / 'converted_official.pth.tar')['state_dict']
    source = fixture['checkpoint']['state_dict_ema' if use_ema else 'state_dict']
    expected = official_to_stl_mm(source)
    assert converted.keys() == expected.keys()
    assert all(torch.equal(converted[k], expected[k]) for k in expected)


def test_train_py_resume_auto_and_cfg_options(tmp_path):
    root = make_image_folder(tmp_path / 'img')
    data = [f'{loader}.dataset.data_root={root}'
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    work_dir = tmp_path / 'work'
    _run('tools/train.py', str(TINY_CONFIG), '--work-dir', str(work_dir), '--cfg-options', *data,
         'train_cfg.max_epochs=1')
    log = _run('tools/train.py', str(TINY_CONFIG), '--work-dir', str(work_dir), '--resume',
               '--cfg-options', *data, 'train_cfg.max_epochs=2')
    assert 'resumed epoch: 1, iter: 4' in log
    assert (work_dir / 'epoch_2.pth').is_file()


def test_amp_without_cuda_is_a_clear_error(tmp_path):
    result = subprocess.run([sys.executable, 'tools/train.py', str(TINY_CONFIG), '--amp'],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode != 0
    assert '--amp needs a CUDA device' in result.stderr
