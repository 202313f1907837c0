"""runner_setup: CPU distributed helpers, and checkpoints loaded strictly for testing
(build_test_runner) and for training from ``load_from`` (build_runner)."""
from pathlib import Path

import pytest
import torch
import torch.distributed as torch_dist
import torch.nn as nn
from mmengine.config import Config
from mmpretrain.registry import MODELS

import stl_mm  # noqa: F401
from stl_mm.engine.runner_setup import (CPUDistributedDataParallel, NothingToResumeError,
                                        build_runner, build_test_runner, set_resume)
from stl_mm.models.backbones.fan_checkpoint import CheckpointMismatchError, stl_mm_to_official
from tiny_image_folder import make_image_folder

CONFIG = Path(__file__).resolve().parents[1] / 'data' / 'configs' / 'tiny_fan_cls.py'


def test_cpu_ddp_wrapper_turns_syncbn_into_bn_and_trains(tmp_path):
    torch_dist.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0,
                                  world_size=1)
    try:
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SyncBatchNorm(4), nn.ReLU())
        wrapped = CPUDistributedDataParallel(model, device_ids=None)
        norms = [m for m in wrapped.module.modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        assert len(norms) == 1 and not isinstance(norms[0], nn.SyncBatchNorm)
        wrapped(torch.randn(2, 3, 8, 8)).sum().backward()
        assert wrapped.module[0].weight.grad is not None
    finally:
        torch_dist.destroy_process_group()


def _config(tmp_path: Path, **overrides) -> Config:
    cfg = Config.fromfile(str(CONFIG))
    root = str(make_image_folder(tmp_path / 'images'))
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = root
    cfg.work_dir = str(tmp_path / 'work')
    cfg.experiment_name = f'runner_setup_{tmp_path.name}'
    cfg.merge_from_dict(overrides)
    return cfg


def _save_classifier(path: Path, cfg: Config, seed: int, **head) -> dict:
    """Save a classifier of ``cfg`` (head overridden) with seeded random weights."""
    torch.manual_seed(seed)
    model_cfg = cfg.model.copy()
    model_cfg['head'] = dict(model_cfg['head'], **head)
    state_dict = {key: torch.randn_like(value) if value.is_floating_point() else value
                  for key, value in MODELS.build(model_cfg).state_dict().items()}
    torch.save({'meta': {}, 'state_dict': state_dict}, path)
    return state_dict


def test_test_runner_refuses_a_checkpoint_with_another_head(tmp_path):
    cfg = _config(tmp_path)
    path = tmp_path / 'five_classes.pth'
    _save_classifier(path, cfg, 0, num_classes=5)
    with pytest.raises(CheckpointMismatchError,
                       match=r'head\.head\.weight: checkpoint \(5, 32\) vs model \(2, 32\)'):
        build_test_runner(cfg, str(path))


def test_test_runner_loads_official_checkpoints_in_memory_ema_first(tmp_path):
    cfg = _config(tmp_path)
    raw = _save_classifier(tmp_path / 'raw.pth', cfg, 1)
    ema = _save_classifier(tmp_path / 'ema.pth', cfg, 2)
    official = tmp_path / 'official.pth.tar'
    torch.save({'state_dict': stl_mm_to_official(raw), 'state_dict_ema': stl_mm_to_official(ema)},
               official)
    for use_ema, expected in ((True, ema), (False, raw)):
        runner = build_test_runner(_config(tmp_path), str(official), use_ema)
        state = runner.model.state_dict()
        assert all(torch.equal(state[key], expected[key]) for key in expected)
        assert 'accuracy/top1' in runner.test()
        # The EMA hook of the config swaps its copy in for testing: still the loaded weights.
        state = runner.model.state_dict()
        assert all(torch.equal(state[key], expected[key]) for key in expected)
    assert not list((tmp_path / 'work').glob('converted_*'))


def test_load_from_is_strict_when_training(tmp_path):
    path = tmp_path / 'five_classes.pth'
    _save_classifier(path, _config(tmp_path), 0, num_classes=5)
    runner = build_runner(_config(tmp_path, load_from=str(path), train_cfg=dict(max_epochs=1)))
    with pytest.raises(CheckpointMismatchError, match='head.head.weight'):
        runner.train()
    # The same through runner.test(): never evaluates weights the file did not provide.
    runner = build_runner(_config(tmp_path, load_from=str(path)))
    with pytest.raises(CheckpointMismatchError, match='head.head.weight'):
        runner.test()


def test_load_from_reinit_fine_tunes_a_new_head_and_logs_it(tmp_path):
    path = tmp_path / 'five_classes.pth'
    saved = _save_classifier(path, _config(tmp_path), 0, num_classes=5)
    cfg = _config(tmp_path, load_from=str(path), load_from_reinit='head.',
                  train_cfg=dict(max_epochs=1), optim_wrapper=dict(optimizer=dict(lr=0.)))
    runner = build_runner(cfg)
    runner.train()
    state = runner.model.state_dict()
    assert torch.equal(state['backbone.cls_token'], saved['backbone.cls_token'])
    assert state['head.head.weight'].shape == (2, 32)
    log = (Path(runner.log_dir) / f'{runner.timestamp}.log').read_text()
    assert ('LoadCheckpointHook: re-initialised (kept their initial values, not loaded from '
            f'{path}): head.aux_head.bias, head.aux_head.weight, head.head.bias, '
            'head.head.weight') in log


def test_load_from_reinit_without_load_from_is_refused(tmp_path):
    with pytest.raises(ValueError, match='load_from is not set'):
        build_runner(_config(tmp_path, load_from_reinit='head.'))


def test_resume_refuses_a_missing_checkpoint_and_a_dangling_last_checkpoint(tmp_path):
    missing = tmp_path / 'epoch_9.pth'
    with pytest.raises(NothingToResumeError,
                       match=f"cannot resume from '{missing}': no such file. Pass an existing"):
        set_resume(_config(tmp_path), str(missing))
    cfg = _config(tmp_path)
    Path(cfg.work_dir).mkdir()
    (Path(cfg.work_dir) / 'last_checkpoint').write_text(str(missing))
    with pytest.raises(NothingToResumeError, match='last_checkpoint names it, but it does not'):
        set_resume(cfg, 'auto', if_possible=True)
    # A config asking for resume=True is held to the same rule.
    with pytest.raises(NothingToResumeError, match='nothing to resume in the work dir'):
        build_runner(_config(tmp_path / 'other', resume=True))


def test_resume_if_possible_starts_fresh_in_an_empty_work_dir(tmp_path):
    cfg = _config(tmp_path)
    set_resume(cfg, None, if_possible=True)
    assert not cfg.resume and cfg.load_from is None
