"""SafeCheckpointHook (every run's checkpoint hook, via build_runner): a run killed while it
saves keeps its previous checkpoint, last_checkpoint names it and --resume continues from it."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

import stl_mm  # noqa: F401
from stl_mm.engine.hooks import SafeCheckpointHook
from stl_mm.engine.runner_setup import build_runner
from stl_mm.utils import TEMP_PREFIX
from tiny_image_folder import make_image_folder

CONFIG = Path(__file__).resolve().parents[2] / 'data' / 'configs' / 'tiny_fan_cls.py'


class Killed(BaseException):
    """Stands for kill -9 (not an Exception: nothing may catch it and carry on)."""


def _config(tmp_path: Path, **overrides) -> Config:
    cfg = Config.fromfile(str(CONFIG))
    root = str(make_image_folder(tmp_path / 'images', per_class=2))
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = root
    cfg.work_dir = str(tmp_path / 'work')
    cfg.experiment_name = f'safe_checkpoint_{len(list(tmp_path.glob("work/*")))}'
    cfg.merge_from_dict(dict(default_hooks=dict(checkpoint=dict(max_keep_ckpts=1)),
                             randomness=dict(seed=None), **overrides))
    return cfg


def test_a_kill_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    save = torch.save

    def killed_while_saving_epoch_2(obj, file, *args, **kwargs):
        if isinstance(obj, dict) and obj.get('meta', {}).get('epoch') == 2:
            raise Killed
        save(obj, file, *args, **kwargs)

    monkeypatch.setattr(torch, 'save', killed_while_saving_epoch_2)
    runner = build_runner(_config(tmp_path))
    with pytest.raises(Killed):
        runner.train()
    monkeypatch.undo()

    work = tmp_path / 'work'
    assert sorted(path.name for path in work.glob('*.pth')) == ['epoch_1.pth']
    assert (work / 'last_checkpoint').read_text() == str(work / 'epoch_1.pth')
    leftover = work / f'{TEMP_PREFIX}epoch_2.pth.a1b2c3'  # what kill -9 inside a save leaves
    leftover.write_bytes(b'truncated')
    seed = torch.load(work / 'epoch_1.pth', weights_only=True)['meta']['seed']

    runner = build_runner(_config(tmp_path, resume=True))
    # seed=None: the resumed run takes the checkpoint's seed before it builds its samplers.
    assert runner.seed == seed
    runner.train()
    log = (Path(runner.log_dir) / f'{runner.timestamp}.log').read_text()
    assert 'resumed epoch: 1, iter: 2' in log  # epoch 1 is not trained again
    assert any(isinstance(hook, SafeCheckpointHook) for hook in runner.hooks)
    assert sorted(path.name for path in work.glob('*.pth')) == ['epoch_2.pth']
    assert not leftover.exists()
    assert (work / 'last_checkpoint').read_text() == str(work / 'epoch_2.pth')
    assert torch.load(work / 'epoch_2.pth', weights_only=True)['message_hub'][
        'runtime_info']['keep_ckpt_ids'] == [2]


def test_a_kill_while_saving_a_new_best_keeps_the_previous_best(tmp_path, monkeypatch):
    cfg = _config(tmp_path, train_cfg=dict(max_epochs=1))
    cfg.default_hooks.checkpoint.save_best = 'accuracy/top1'
    runner = build_runner(cfg)
    runner.train()
    best = sorted((tmp_path / 'work').glob('best_*.pth'))
    assert [path.name for path in best] == ['best_accuracy_top1_epoch_1.pth']

    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(torch, 'save', killed)
    hook = next(hook for hook in runner.hooks if isinstance(hook, SafeCheckpointHook))
    runner.train_loop._epoch = 2  # a later validation with a better score
    with pytest.raises(Killed):
        hook._save_best_checkpoint(runner, {'accuracy/top1': 101.0})
    assert sorted((tmp_path / 'work').glob('best_*.pth')) == best
