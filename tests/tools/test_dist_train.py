"""tools/dist_train.sh runs two CPU ranks (gloo) that train the same model."""
import os
import subprocess
import sys
from pathlib import Path

import torch
from mmengine.config import Config

import stl_mm  # noqa: F401  (allow-lists the globals mmengine writes into checkpoints)
from det_synthetic_coco import fit_to_synthetic_coco, make_synthetic_coco
from synthetic_cityscapes import make_cityscapes, tiny_segmentation_config
from tiny_image_folder import make_image_folder

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / 'tests' / 'data' / 'configs' / 'tiny_fan_cls_dist.py'
# This checkout's package first (tools/train.py run directly imports the installed one
# otherwise), then the test hooks of tests/data.
PYTHONPATH = os.pathsep.join([str(REPO), str(REPO / 'tests' / 'data')])


def dist_train(config: Path, work_dir: Path, port: int, *args: str) -> str:
    """Run tools/dist_train.sh with two CPU ranks; return its log, failing with its tail."""
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(port), OMP_NUM_THREADS='1',
               PYTHONPATH=PYTHONPATH)
    result = subprocess.run(
        ['bash', str(REPO / 'tools' / 'dist_train.sh'), str(config), '2', '--work-dir',
         str(work_dir), *args], env=env, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert 'Distributed training: True' in log
    return log


def with_rank_probe(cfg: Config, path: Path) -> Path:
    """Dump ``cfg`` to ``path`` with the hook that fingerprints each rank's parameters."""
    cfg.custom_imports = dict(imports=['stl_mm', 'rank_probe_hook'], allow_failed_imports=False)
    cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [dict(type='RankProbeHook')]
    cfg.dump(str(path))
    return path


def assert_ranks_agree(work_dir: Path) -> None:
    """Both ranks ended with the same parameters (fingerprints written by RankProbeHook)."""
    fingerprints = [(work_dir / f'rank{rank}_of_2.txt').read_text() for rank in (0, 1)]
    assert fingerprints[0] == fingerprints[1]


def test_two_cpu_ranks_train_and_agree(tmp_path):
    root = make_image_folder(tmp_path / 'images')
    work_dir = tmp_path / 'work'
    overrides = [f'{loader}.dataset.data_root={root}'
                 for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    env = dict(os.environ, PYTHON=sys.executable, PORT='29533', OMP_NUM_THREADS='1',
               PYTHONPATH=PYTHONPATH)
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
    assert_ranks_agree(work_dir)


def test_two_cpu_ranks_train_a_tiny_stl_student(tmp_path):
    """Stage 1 on one process, then stage 2 (frozen teacher, dual views) on two CPU ranks."""
    root = make_image_folder(tmp_path / 'images')
    data = [f'{loader}.dataset.data_root={root}'
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    env = dict(os.environ, PYTHON=sys.executable, PORT='29534', OMP_NUM_THREADS='1',
               PYTHONPATH=PYTHONPATH)
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
    assert_ranks_agree(work_dir)


def test_two_cpu_ranks_train_the_fan_t_segformer(tmp_path):
    """The real FAN-T SegFormer config (SyncBN in the head) on two gloo ranks."""
    data_root = tmp_path / 'cityscapes'
    make_cityscapes(data_root)
    work_dir = tmp_path / 'work'
    config = REPO / 'configs' / 'seg' / 'segformer_fan-t-hybrid_8xb1-160k_cityscapes-1024x1024.py'
    cfg = tiny_segmentation_config(config, data_root, work_dir)
    assert cfg.model.decode_head.norm_cfg.type == 'SyncBN'
    dist_train(with_rank_probe(cfg, tmp_path / 'seg.py'), work_dir, 29535)
    checkpoint = torch.load(work_dir / 'iter_2.pth')
    assert checkpoint['meta']['iter'] == 2
    assert any(key.startswith('backbone.blocks.') for key in checkpoint['state_dict'])
    assert_ranks_agree(work_dir)


def test_two_cpu_ranks_train_the_fan_t_cascade_mask_rcnn(tmp_path):
    """The real FAN-T Cascade Mask R-CNN config (SyncBN in the heads) on two gloo ranks."""
    dataset = make_synthetic_coco(tmp_path / 'coco', num_images=4)
    work_dir = tmp_path / 'work'
    config = REPO / 'configs' / 'det' / 'cascade-mask-rcnn_fan-t-hybrid_fpn_ms-3x_coco.py'
    cfg = fit_to_synthetic_coco(Config.fromfile(str(config)), dataset, str(work_dir))
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    dist_train(with_rank_probe(cfg, tmp_path / 'det.py'), work_dir, 29536)
    checkpoint = torch.load(work_dir / 'epoch_1.pth')
    # 4 images, batch 1 per rank, 2 ranks: 2 iterations.
    assert checkpoint['meta']['iter'] == 2
    assert any(key.startswith('roi_head.') for key in checkpoint['state_dict'])
    assert_ranks_agree(work_dir)
