"""tools/dist_train.sh runs two CPU ranks (gloo) that train the same model."""
import os
import subprocess
import sys
from pathlib import Path

import torch

import stl_mm  # noqa: F401  (allow-lists the globals mmengine writes into checkpoints)
from tiny_image_folder import make_image_folder

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / 'tests' / 'data' / 'configs' / 'tiny_fan_cls_dist.py'


def test_two_cpu_ranks_train_and_agree(tmp_path):
    root = make_image_folder(tmp_path / 'images')
    work_dir = tmp_path / 'work'
    overrides = [f'{loader}.dataset.data_root={root}'
                 for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    env = dict(os.environ, PYTHON=sys.executable, PORT='29533', OMP_NUM_THREADS='1',
               PYTHONPATH=str(REPO / 'tests' / 'data'))
    result = subprocess.run(
        ['bash', str(REPO / 'tools' / 'dist_train.sh'), str(CONFIG), '2', '--work-dir',
         str(work_dir), '--cfg-options', *overrides],
        env=env, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert 'Distributed training is not used' not in log
    assert 'Distributed training: True' in log
    checkpoint = torch.load(work_dir / 'epoch_1.pth')
    # 8 images, batch 2 per rank, 2 ranks: 2 iterations an epoch.
    assert checkpoint['meta']['iter'] == 2
    assert not any(key.startswith('module.') for key in checkpoint['state_dict'])
    fingerprints = [(work_dir / f'rank{rank}_of_2.txt').read_text() for rank in (0, 1)]
    assert fingerprints[0] == fingerprints[1]


def test_two_cpu_ranks_train_a_tiny_stl_student(tmp_path):
    """Stage 1 on one process, then stage 2 (frozen teacher, dual views) on two CPU ranks."""
    root = make_image_folder(tmp_path / 'images')
    data = [f'{loader}.dataset.data_root={root}'
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    env = dict(os.environ, PYTHON=sys.executable, PORT='29534', OMP_NUM_THREADS='1',
               PYTHONPATH=str(REPO / 'tests' / 'data'))
    stage1 = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'train.py'),
         str(REPO / 'tests' / 'data' / 'configs' / 'tiny_fan_cls.py'), '--work-dir',
         str(tmp_path / 'stage1'), '--cfg-options', *data, 'train_cfg.max_epochs=1'],
        env=env, capture_output=True, text=True, timeout=600)
    assert stage1.returncode == 0, (stage1.stdout + stage1.stderr)[-4000:]
    teacher = tmp_path / 'stage1' / 'epoch_1.pth'

    work_dir = tmp_path / 'stage2'
    stage2 = subprocess.run(
        ['bash', str(REPO / 'tools' / 'dist_train.sh'),
         str(REPO / 'tests' / 'data' / 'configs' / 'tiny_fan_student.py'), '2', '--work-dir',
         str(work_dir), '--cfg-options', *data, f'default_hooks.teacher.checkpoint={teacher}'],
        env=env, capture_output=True, text=True, timeout=600)
    log = stage2.stdout + stage2.stderr
    assert stage2.returncode == 0, log[-4000:]
    assert 'Distributed training: True' in log
    assert 'loss_token' in log
    checkpoint = torch.load(work_dir / 'epoch_1.pth')
    assert checkpoint['meta']['iter'] == 2
    assert not any('teacher' in key for key in checkpoint['state_dict'])
    fingerprints = [(work_dir / f'rank{rank}_of_2.txt').read_text() for rank in (0, 1)]
    assert fingerprints[0] == fingerprints[1]
