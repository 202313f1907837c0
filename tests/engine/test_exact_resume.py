"""A stage-2 run killed after a checkpoint and resumed ends exactly where the uninterrupted run
ends: same weights, EMA weights and metrics (RandomStateHook, added by build_runner)."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmpretrain.registry import MODELS

import stl_mm  # noqa: F401
from stl_mm.engine.runner_setup import build_runner
from tiny_image_folder import make_image_folder

CONFIGS = Path(__file__).resolve().parents[1] / 'data' / 'configs'


class Killed(Exception):
    """Stands for kill -9 right after a checkpoint was written."""


class KillAfterCheckpoint(Hook):
    """Stops the run after the checkpoint of epoch ``epoch`` (CheckpointHook runs before it)."""

    priority = 'LOWEST'

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def after_train_epoch(self, runner) -> None:
        if runner.epoch + 1 == self.epoch:
            raise Killed


class MetricsProbe(Hook):
    """Records the validation metrics of every epoch."""

    def __init__(self) -> None:
        self.metrics = {}

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.metrics[runner.epoch] = dict(metrics)


@pytest.fixture(scope='module')
def student_config(tmp_path_factory) -> Config:
    """tiny_fan_student (Mixup/CutMix, RandAugment, random erasing, Gumbel token labels, EMA)
    on a temporary image folder, with a random tiny teacher; two epochs of two iterations on four
    images."""
    root = tmp_path_factory.mktemp('resume')
    cfg = Config.fromfile(str(CONFIGS / 'tiny_fan_student.py'))
    teacher = MODELS.build(cfg.default_hooks.teacher.model)
    torch.save({'state_dict': teacher.state_dict()}, root / 'teacher.pth')
    cfg.default_hooks.teacher.checkpoint = str(root / 'teacher.pth')
    images = str(make_image_folder(root / 'images', per_class=2))
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = images
    cfg.custom_imports = dict(imports=['stl_mm'], allow_failed_imports=False)
    cfg.merge_from_dict(dict(train_cfg=dict(max_epochs=2), val_dataloader=dict(batch_size=4),
                             model=dict(backbone=dict(drop_path_rate=0.1)),
                             default_hooks=dict(logger=dict(interval=2))))
    cfg.randomness = dict(seed=3)
    return cfg


def _train(cfg: Config, work_dir: Path, *hooks: Hook, resume: bool = False) -> dict:
    cfg = cfg.copy()
    cfg.work_dir, cfg.resume = str(work_dir), resume
    cfg.experiment_name = f'{work_dir.name}_{len(list(work_dir.glob("*")))}'
    cfg.custom_hooks = [dict(type='EMAHook', momentum=0.1)]
    runner = build_runner(cfg)
    for hook in hooks:
        runner.register_hook(hook)
    runner.train()
    return torch.load(work_dir / 'epoch_2.pth', weights_only=True)


def test_a_resumed_student_run_ends_as_the_uninterrupted_run(student_config, tmp_path):
    whole_metrics, resumed_metrics = MetricsProbe(), MetricsProbe()
    whole = _train(student_config, tmp_path / 'whole', whole_metrics)
    with pytest.raises(Killed):
        _train(student_config, tmp_path / 'killed', KillAfterCheckpoint(epoch=1))
    assert (tmp_path / 'killed' / 'epoch_1.pth').is_file()
    resumed = _train(student_config, tmp_path / 'killed', resumed_metrics, resume=True)

    for part in ('state_dict', 'ema_state_dict'):
        assert whole[part].keys() == resumed[part].keys()
        differing = [key for key in whole[part]
                     if not torch.equal(whole[part][key], resumed[part][key])]
        assert not differing, f'{part}: {differing[:5]}'
    assert resumed_metrics.metrics == {2: whole_metrics.metrics[2]}
    # The random state goes on from the checkpoint: the run does not repeat epoch 1's draws.
    killed = torch.load(tmp_path / 'killed' / 'epoch_1.pth', weights_only=True)
    assert not torch.equal(killed['meta']['random_state']['torch'],
                           whole['meta']['random_state']['torch'])


class KillAfterIteration(Hook):
    """Stops an iteration-based run after iteration ``iteration`` (and its checkpoint)."""

    priority = 'LOWEST'

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == self.iteration:
            raise Killed


def test_an_iteration_based_run_resumes_exactly(tmp_path):
    """mmengine's loop redraws the batches it skips on resume (InfiniteSampler): the random
    state is restored after that, before the first batch the resumed run trains on."""
    cfg = Config.fromfile(str(CONFIGS / 'tiny_fan_cls.py'))
    images = str(make_image_folder(tmp_path / 'images', per_class=2))
    pipeline = [dict(type='LoadImageFromFile'), dict(type='RandomResizedCrop', scale=32),
                dict(type='RandomFlip', prob=0.5), dict(type='PackInputs')]
    cfg.merge_from_dict(dict(
        train_dataloader=dict(dataset=dict(data_root=images, pipeline=pipeline),
                              sampler=dict(type='InfiniteSampler', shuffle=True)),
        val_dataloader=dict(dataset=dict(data_root=images)),
        model=dict(backbone=dict(drop_path_rate=0.1)),
        default_hooks=dict(checkpoint=dict(by_epoch=False, interval=3, max_keep_ckpts=1)),
        randomness=dict(seed=5)))
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=5, val_interval=5)
    cfg.param_scheduler = dict(type='ConstantLR', factor=1.0, by_epoch=False)

    def train(work_dir: Path, *hooks: Hook, resume: bool = False) -> dict:
        run_cfg = cfg.copy()
        run_cfg.work_dir, run_cfg.resume = str(work_dir), resume
        run_cfg.experiment_name = f'{work_dir.name}_{resume}'
        runner = build_runner(run_cfg)
        for hook in hooks:
            runner.register_hook(hook)
        runner.train()
        return torch.load(work_dir / 'iter_5.pth', weights_only=True)

    whole = train(tmp_path / 'whole')
    with pytest.raises(Killed):
        train(tmp_path / 'killed', KillAfterIteration(3))
    resumed = train(tmp_path / 'killed', resume=True)
    for part in ('state_dict', 'ema_state_dict'):
        assert all(torch.equal(whole[part][key], resumed[part][key]) for key in whole[part])
