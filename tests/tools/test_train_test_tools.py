"""tools/train.py and tools/test.py: one pair for every codebase, official checkpoints accepted,
checkpoints that do not fit refused."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmpretrain.registry import MODELS

import stl_mm  # noqa: F401
from stl_mm.models.backbones.fan_checkpoint import stl_mm_to_official
from tiny_image_folder import make_image_folder

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / 'tests' / 'data' / 'configs' / 'tiny_fan_cls.py'


def _run(*args: str, returncode: int = 0) -> str:
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600,
                            cwd=REPO)
    log = result.stdout + result.stderr
    assert result.returncode == returncode, log[-4000:]
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
        "    cls_attn_layers=2, hybrid_stem=dict(depths=[1, 1], dims=[32, 48]))),\n"
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
    weights = ("EMA weights ('state_dict_ema')" if use_ema else
               "weights from 'state_dict', EMA 'state_dict_ema' present but use_ema=False")
    assert f'{official}: {weights}, official layout; loaded 135 tensors' in log
    assert not list(work_dir.glob('converted_*'))  # converted in memory


def _tiny_test_config(tmp_path: Path, **head) -> Path:
    """tiny_fan_cls with the test set on a temporary image folder (head overridden)."""
    config = tmp_path / 'tiny.py'
    config.write_text(
        f"_base_ = '{TINY_CONFIG}'\n"
        f"model = dict(head=dict({', '.join(f'{k}={v!r}' for k, v in head.items())}))\n"
        "test_dataloader = dict(dataset=dict(\n"
        f"    data_root='{make_image_folder(tmp_path / 'img')}'))\n")
    return config


@pytest.mark.parametrize('case', ['five-class head', 'wider FAN', 'block missing'])
def test_test_py_refuses_a_checkpoint_that_does_not_fit(tmp_path, case):
    """Each of these used to be evaluated with random weights in place, exit code 0."""
    model = MODELS.build(dict(
        type='TokenLabelingClassifier',
        backbone=dict(type='FAN', arch=dict(embed_dims=48 if case == 'wider FAN' else 32,
                                            depth=2, num_heads=2, patch_size=8,
                                            cls_attn_layers=1)),
        head=dict(type='TokenLabelingHead', num_classes=5 if case == 'five-class head' else 2,
                  in_channels=48 if case == 'wider FAN' else 32)))
    official = {key: value for key, value in stl_mm_to_official(model.state_dict()).items()
                if not (case == 'block missing' and key.startswith('blocks.1.'))}
    checkpoint = tmp_path / 'bad.pth'
    torch.save({'state_dict_ema': official, 'state_dict': official}, checkpoint)
    log = _run('tools/test.py', str(_tiny_test_config(tmp_path)), str(checkpoint), '--work-dir',
               str(tmp_path / 'work'), returncode=1)
    assert f'tools/test.py: {checkpoint} does not fit TokenLabelingClassifier' in log
    assert 'accuracy/top1' not in log and 'Traceback' not in log
    expected = {'five-class head': 'head.head.weight: checkpoint (5, 32) vs model (2, 32)',
                'wider FAN': 'backbone.cls_token: checkpoint (1, 1, 48) vs model (1, 1, 32)',
                'block missing': 'missing from the checkpoint: backbone.blocks.1.'}[case]
    assert expected in log


def test_test_py_names_an_unreadable_checkpoint(tmp_path):
    checkpoint = tmp_path / 'empty.pth'
    checkpoint.write_bytes(b'')
    log = _run('tools/test.py', str(_tiny_test_config(tmp_path)), str(checkpoint), '--work-dir',
               str(tmp_path / 'work'), returncode=1)
    assert f'tools/test.py: Cannot read checkpoint {checkpoint}: the file is empty' in log


def test_tools_use_the_installed_package():
    for tool in ('train.py', 'test.py', 'model_converters/fan_to_stl_mm.py'):
        assert 'sys.path' not in (REPO / 'tools' / tool).read_text(), tool


def test_train_py_resume_auto_and_cfg_options(tmp_path):
    root = make_image_folder(tmp_path / 'img')
    data = [f'{loader}.dataset.data_root={root}'
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    work_dir = tmp_path / 'work'
    log = _run('tools/train.py', str(TINY_CONFIG), '--work-dir', str(work_dir),
               '--resume-if-possible', '--cfg-options', *data, 'train_cfg.max_epochs=1')
    assert f'--resume-if-possible: no checkpoint in {work_dir}, starting fresh.' in log
    log = _run('tools/train.py', str(TINY_CONFIG), '--work-dir', str(work_dir), '--resume',
               '--cfg-options', *data, 'train_cfg.max_epochs=2')
    assert 'resumed epoch: 1, iter: 4' in log
    assert (work_dir / 'epoch_2.pth').is_file()


def test_train_py_resume_with_nothing_to_resume_stops(tmp_path):
    """It used to train from scratch and exit 0."""
    mistyped = tmp_path / 'wrok'
    log = _run('tools/train.py', str(TINY_CONFIG), '--work-dir', str(mistyped), '--resume',
               returncode=1)
    assert (f"tools/train.py: --resume: nothing to resume in the work dir '{mistyped}' (it has "
            'no last_checkpoint file') in log
    assert 'drop --resume, or use --resume-if-possible' in log
    assert 'Traceback' not in log and not list(mistyped.glob('**/*.pth'))


def test_amp_without_cuda_is_a_clear_error(tmp_path):
    result = subprocess.run([sys.executable, 'tools/train.py', str(TINY_CONFIG), '--amp'],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode != 0
    assert '--amp needs a CUDA device' in result.stderr
