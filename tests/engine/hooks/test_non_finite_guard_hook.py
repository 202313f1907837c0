"""NonFiniteGuardHook: a diverging run stops at its first non-finite loss or gradient norm, and
no checkpoint with non-finite weights is written."""
import re
import subprocess
import sys
import types
from pathlib import Path
from unittest import mock

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.optim import AmpOptimWrapper, OptimWrapper

import stl_mm  # noqa: F401
from stl_mm.engine.hooks import NonFiniteGuardHook, NonFiniteTrainingError
from stl_mm.engine.runner_setup import build_runner, prepare_config
from stl_mm.registry import REGISTRIES
from tiny_image_folder import make_image_folder

REPO = Path(__file__).resolve().parents[3]
TINY_CONFIG = REPO / 'tests' / 'data' / 'configs' / 'tiny_fan_cls.py'


def _data_options(root: Path) -> dict:
    return {f'{loader}.dataset.data_root': str(root)
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')}


def _checkpoints_are_finite(work_dir: Path) -> dict:
    finite = {}
    for path in sorted(work_dir.glob('*.pth')):
        checkpoint = torch.load(path, map_location='cpu', weights_only=False)
        finite[path.name] = all(torch.isfinite(value).all()
                                for key in ('state_dict', 'ema_state_dict')
                                for value in checkpoint.get(key, {}).values()
                                if value.is_floating_point())
    return finite


def test_train_py_stops_a_diverging_stage1_run_and_keeps_the_good_checkpoint(tmp_path):
    """Epoch 1 trains at lr 1e-3, then the learning rate jumps to 1e6: the run used to log
    ``loss: nan``, save NaN checkpoints and exit 0."""
    config = tmp_path / 'diverging.py'
    config.write_text(
        f"_base_ = '{TINY_CONFIG}'\n"
        "param_scheduler = dict(_delete_=True, type='MultiStepLR', by_epoch=True,\n"
        "                       milestones=[1], gamma=1e9)\n"
        "train_cfg = dict(max_epochs=4)\n")
    work_dir = tmp_path / 'work'
    options = [f'{k}={v}' for k, v in _data_options(make_image_folder(tmp_path / 'img')).items()]
    result = subprocess.run(
        [sys.executable, 'tools/train.py', str(config), '--work-dir', str(work_dir),
         '--cfg-options', *options], capture_output=True, text=True, cwd=REPO, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 1, log[-4000:]
    assert 'Traceback' not in log
    stop = re.search(r'tools/train\.py: NonFiniteGuardHook: training stopped at iteration '
                     r'(\d+) \(epoch (\d+), its iteration (\d+)\) of .*?: (.*?)\. '
                     r'Loss terms: (.*?)\. Learning rate: (\S+)\. '
                     r'No checkpoint was written from this iteration', log)
    assert stop, log[-4000:]
    iteration, epoch, in_epoch = (int(stop.group(i)) for i in (1, 2, 3))
    assert epoch >= 2 and iteration == 4 * (epoch - 1) + in_epoch and stop.group(6) == '1e+06'
    assert re.fullmatch(r'loss=\S+, loss_cls=\S+, loss_token=\S+', stop.group(5))
    for switch in ('optim_wrapper.optimizer.lr', 'optim_wrapper.clip_grad (now None',
                   'model.labeler_weight'):
        assert switch in log
    # Every iteration logged before the stop had finite losses: it stopped at the first.
    logged = re.findall(r'Epoch\(train\)\s+\[\d+\]\[\s*\d+/\d+\].*?loss: (\S+)', log)
    assert len(logged) == iteration
    assert all(value not in ('nan', 'inf', '-inf') for value in logged[:-1])
    finite = _checkpoints_are_finite(work_dir)
    assert finite.get('epoch_1.pth') and all(finite.values()), finite
    last = (work_dir / 'last_checkpoint').read_text().strip()
    assert Path(last).is_file() and Path(last).name in finite


class _Corrupt(Hook):
    """Puts NaN into the model at a chosen point, as a diverged forward would."""

    priority = 80  # after NonFiniteGuardHook (LOW), before CheckpointHook (VERY_LOW)

    def __init__(self, epoch=None, grad_iter=None) -> None:
        self.epoch, self.grad_iter, self.before_step = epoch, grad_iter, None

    def after_train_epoch(self, runner) -> None:
        if runner.epoch + 1 == self.epoch:
            with torch.no_grad():
                runner.model.backbone.cls_token[..., 0] = float('nan')

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if runner.iter + 1 == self.grad_iter:  # finite loss, infinite gradient
            self.before_step = {k: v.clone() for k, v in runner.model.named_parameters()}
            runner.model.backbone.cls_token.register_hook(lambda grad: grad * float('inf'))


def _tiny_runner(tmp_path: Path, corrupt: _Corrupt, **options):
    options = dict(_data_options(make_image_folder(tmp_path / 'img')),
                   **{'train_cfg.val_interval': 10}, **options)  # no validation: faster
    cfg = prepare_config(str(TINY_CONFIG), str(tmp_path / 'work'), options)
    runner = build_runner(cfg)
    runner.register_hook(corrupt)
    return runner


def test_a_checkpoint_with_non_finite_weights_is_never_written(tmp_path):
    runner = _tiny_runner(tmp_path, _Corrupt(epoch=2))
    assert sum(isinstance(h, NonFiniteGuardHook) for h in runner.hooks) == 1
    with pytest.raises(NonFiniteTrainingError) as error:
        runner.train()
    message = str(error.value)
    assert message.startswith('NonFiniteGuardHook: refused to save the checkpoint of '
                              f'iteration 8 in {tmp_path / "work"}: it holds NaN or inf')
    assert 'backbone.cls_token' in message and 'No file was written' in message
    work_dir = tmp_path / 'work'
    assert _checkpoints_are_finite(work_dir) == {'epoch_1.pth': True}
    assert (work_dir / 'last_checkpoint').read_text().strip().endswith('epoch_1.pth')


@pytest.mark.parametrize('clip_grad', [None, dict(max_norm=1.0)])
def test_an_infinite_gradient_norm_drops_the_step_and_stops(tmp_path, clip_grad):
    corrupt = _Corrupt(grad_iter=3)
    runner = _tiny_runner(tmp_path, corrupt, **{'optim_wrapper.clip_grad': clip_grad})
    with pytest.raises(NonFiniteTrainingError) as error:
        runner.train()
    message = str(error.value)
    assert 'training stopped at iteration 3 (epoch 1, its iteration 3)' in message
    # With clip_grad, the norm before clipping (clipping by it made the gradients NaN).
    assert 'gradient norm inf (the optimizer step was not applied)' in message
    assert f'optim_wrapper.clip_grad (now {clip_grad};' in message
    terms = re.search(r'Loss terms: (.*?)\. Learning rate: 0\.001\.', message).group(1)
    assert all(float(value) == float(value) for value in re.findall(r'=(\S+?)(?:,|$)', terms))
    # The weights are still those before the step; no checkpoint was saved in epoch 1.
    for key, value in runner.model.named_parameters():
        assert torch.equal(value, corrupt.before_step[key]), key
    assert not list((tmp_path / 'work').glob('*.pth'))


def _amp_wrapper(model: torch.nn.Module) -> AmpOptimWrapper:
    """mmengine's AmpOptimWrapper with torch's CPU grad scaler (it asserts a CUDA device)."""
    module = 'mmengine.optim.optimizer.amp_optimizer_wrapper'
    with mock.patch(f'{module}.is_cuda_available', return_value=True):
        wrapper = AmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    wrapper.loss_scaler = torch.amp.GradScaler('cpu', init_scale=2.0**8)
    return wrapper


def _train_steps(hook: NonFiniteGuardHook, runner, model, factors) -> None:
    for factor in factors:
        hook.before_train_iter(runner, runner.iter)
        loss = model(torch.ones(1, 2)).sum() * factor
        runner.optim_wrapper.update_params(loss)
        hook.after_train_iter(runner, runner.iter, outputs=dict(loss=loss.detach()))
        runner.iter += 1


def _toy_runner(model, wrapper):
    return types.SimpleNamespace(optim_wrapper=wrapper, model=model, iter=0, epoch=0,
                                 train_loop=types.SimpleNamespace(), work_dir='work_dirs/toy')


def test_amp_skipped_steps_are_normal_but_a_run_that_keeps_skipping_stops():
    model = torch.nn.Linear(2, 1)
    runner = _toy_runner(model, _amp_wrapper(model))
    hook = NonFiniteGuardHook(max_consecutive_skips=3)
    hook.before_train(runner)
    inf = float('inf')
    # Overflowing steps (non-finite loss and gradients) are skipped by the scaler, a finite
    # step resets the count: no error.
    _train_steps(hook, runner, model, [inf, inf, 1.0, inf, inf, 1.0])
    assert runner.optim_wrapper.loss_scaler.get_scale() < 2.0**8
    with pytest.raises(NonFiniteTrainingError) as error:
        _train_steps(hook, runner, model, [inf, inf, inf])
    message = str(error.value)
    assert 'training stopped at iteration 9' in message
    assert 'the AMP loss scaler skipped 3 steps in a row' in message
    assert re.search(r'Loss terms: loss=-?inf\. ', message) and '--amp' in message
    assert all(torch.isfinite(p).all() for p in model.parameters())
    hook.after_train(runner)


def test_without_amp_the_first_non_finite_loss_stops():
    model = torch.nn.Linear(2, 1)
    runner = _toy_runner(model, OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1)))
    hook = NonFiniteGuardHook()
    hook.before_train(runner)
    _train_steps(hook, runner, model, [1.0, 2.0])
    with pytest.raises(NonFiniteTrainingError, match='iteration 3 of work_dirs/toy: non-finite '
                       'loss; gradient norm nan'):
        _train_steps(hook, runner, model, [float('nan')])
    hook.after_train(runner)


@pytest.mark.parametrize('codebase', ['mmpretrain', 'mmseg', 'mmdet'])
def test_the_guard_is_registered_for_every_codebase(codebase):
    if codebase not in REGISTRIES:
        pytest.fail(f'{codebase} is not installed; the test environment has all three.')
    assert REGISTRIES[codebase].HOOKS.get('NonFiniteGuardHook') is NonFiniteGuardHook


def test_a_configured_guard_is_not_added_twice(tmp_path):
    cfg = prepare_config(str(TINY_CONFIG), str(tmp_path / 'work'),
                         _data_options(make_image_folder(tmp_path / 'img')))
    cfg.custom_hooks = [dict(type='NonFiniteGuardHook', max_consecutive_skips=5)]
    guards = [h for h in build_runner(cfg).hooks if isinstance(h, NonFiniteGuardHook)]
    assert len(guards) == 1 and guards[0].max_consecutive_skips == 5
    with pytest.raises(ValueError, match='max_consecutive_skips must be an int >= 1, got 0'):
        NonFiniteGuardHook(max_consecutive_skips=0)
