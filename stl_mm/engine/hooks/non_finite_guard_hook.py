"""Hook that stops training at the first non-finite loss or gradient norm and refuses to save
non-finite weights."""
import math
from typing import Dict, List, Optional

import torch
from mmengine.dist import all_reduce, get_world_size
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper, OptimWrapperDict

from stl_mm.registry import register
from stl_mm.utils import non_finite_tensors


class NonFiniteTrainingError(FloatingPointError):
    """Training produced a non-finite loss, gradient norm or weights, and was stopped."""


class _GuardedOptimizer:
    """What the guard records about one optimizer wrapper during an iteration.

    A step pre-hook on the wrapper's torch optimizer runs after the wrapper clipped (and, under
    AMP, unscaled) the gradients and before the weights change. Under AMP the loss scaler calls
    the optimizer only for finite gradients, so a step the wrapper asked for without the
    optimizer running is a step the scaler skipped.
    """

    def __init__(self, wrapper: OptimWrapper) -> None:
        self.wrapper = wrapper
        self.amp = hasattr(wrapper, 'loss_scaler')
        self.stepped = False
        self.grad_norm: Optional[float] = None  # set when non-finite (the step was dropped)
        self.consecutive_skips = 0
        self.handle = wrapper.optimizer.register_step_pre_hook(self.before_step)

    def before_step(self, optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        self.stepped = True
        if self.amp:
            return
        params = [p for group in optimizer.param_groups for p in group['params']
                  if p.grad is not None]
        if not params:
            return
        # One fused norm over all gradients and one host sync per step: the cheap check.
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        if not torch.isfinite(norm):
            self.grad_norm = self._norm_before_clipping(float(norm))
            for param in params:  # optimizers skip parameters without gradients: no update
                param.grad = None

    def _norm_before_clipping(self, norm: float) -> float:
        """The norm mmengine's ``clip_grad`` (by norm) logged for this step, else ``norm``:
        clipping by an infinite norm turns the gradients into NaN."""
        if self.wrapper.clip_grad_kwargs and getattr(self.wrapper, 'grad_name', '') == 'grad_norm':
            return self.wrapper.message_hub.get_scalar('train/grad_norm').current()
        return norm

    def skipped(self) -> bool:
        """Whether the loss scaler skipped a step this iteration."""
        return self.amp and self.wrapper.should_update() and not self.stepped


def _optim_wrappers(optim_wrapper: OptimWrapper) -> List[OptimWrapper]:
    if isinstance(optim_wrapper, OptimWrapperDict):
        return list(optim_wrapper.values())
    return [optim_wrapper]


def _format_number(value: float) -> str:
    return f'{value:.4g}'


@register('HOOKS')
class NonFiniteGuardHook(Hook):
    """Stop a training run at the first non-finite loss or gradient norm; never save
    non-finite weights.

    :func:`~stl_mm.engine.runner_setup.build_runner` adds this hook to every run (mmpretrain,
    mmseg and mmdet configs) unless the config lists it (to set its option).

    * After every iteration the loss terms the model returns are checked; before every
      optimizer step (after gradient clipping) the gradient norm is. A non-finite gradient
      norm drops the step, so the weights in memory stay the last finite ones. The run then
      stops with :class:`NonFiniteTrainingError`, naming the iteration, each loss term, the
      learning rate and the options to look at. The hook runs before the
      ``CheckpointHook``, so nothing is saved from that iteration.
    * Under AMP (``AmpOptimWrapper``) the loss scaler skips steps with non-finite fp16
      gradients and lowers its scale: such skipped steps are normal, also with a non-finite
      loss. ``max_consecutive_skips`` skipped steps in a row stop the run.
    * Before every checkpoint is written, its ``state_dict`` and ``ema_state_dict`` are
      checked: a non-finite tensor stops the run before the file is written.

    In distributed runs the ranks agree on stopping (one all-reduce of a flag per iteration).

    Args:
        max_consecutive_skips: How many steps in a row the AMP loss scaler may skip before the
            run stops. Defaults to 20 (the default scale, 65536, is then below 1).
    """

    priority = 'LOW'  # after EMAHook (its EMA weights are in the checkpoint), before saving

    def __init__(self, max_consecutive_skips: int = 20) -> None:
        if isinstance(max_consecutive_skips, bool) or not isinstance(
                max_consecutive_skips, int) or max_consecutive_skips < 1:
            raise ValueError('NonFiniteGuardHook: max_consecutive_skips must be an int >= 1, '
                             f'got {max_consecutive_skips!r}.')
        self.max_consecutive_skips = max_consecutive_skips
        self._optimizers: List[_GuardedOptimizer] = []

    def before_train(self, runner) -> None:
        """Watch the steps of every optimizer of the run."""
        self._remove_step_hooks()
        self._optimizers = [_GuardedOptimizer(w) for w in _optim_wrappers(runner.optim_wrapper)]

    def after_train(self, runner) -> None:
        self._remove_step_hooks()

    def _remove_step_hooks(self) -> None:
        for guarded in self._optimizers:
            guarded.handle.remove()
        self._optimizers = []

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        for guarded in self._optimizers:
            guarded.stepped, guarded.grad_norm = False, None

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        """Stop at a non-finite loss or gradient norm, or too many skipped AMP steps."""
        losses = {key: float(torch.as_tensor(value, dtype=torch.float64).mean())
                  for key, value in (outputs or {}).items() if 'loss' in key}
        bad_losses = [key for key, value in losses.items() if not math.isfinite(value)]
        problems = []
        for guarded in self._optimizers:
            if guarded.skipped():
                guarded.consecutive_skips += 1
            elif guarded.stepped:
                guarded.consecutive_skips = 0
            if guarded.grad_norm is not None:
                problems.append(f'gradient norm {_format_number(guarded.grad_norm)} (the '
                                'optimizer step was not applied)')
            if guarded.consecutive_skips >= self.max_consecutive_skips:
                problems.append(
                    f'the AMP loss scaler skipped {guarded.consecutive_skips} steps in a row '
                    '(non-finite float16 gradients at every loss scale, now '
                    f'{_format_number(guarded.wrapper.loss_scaler.get_scale())})')
        amp_skipping = any(g.amp and not g.stepped for g in self._optimizers)
        if bad_losses and not amp_skipping:
            problems.insert(0, f'non-finite {", ".join(bad_losses)}')
        stop = torch.tensor([float(bool(problems))])
        if get_world_size() > 1:
            all_reduce(stop, op='max')
        if stop.item():
            raise NonFiniteTrainingError(self._stop_message(runner, batch_idx, losses, problems))

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Refuse to write a checkpoint holding non-finite weights (raw or EMA)."""
        bad = {key: non_finite_tensors(checkpoint[key])
               for key in ('state_dict', 'ema_state_dict') if key in checkpoint}
        bad = {key: names for key, names in bad.items() if names}
        if bad:
            found = '; '.join(f'{key}: {len(names)} tensors, e.g. {", ".join(names[:3])}'
                              for key, names in bad.items())
            raise NonFiniteTrainingError(
                f'NonFiniteGuardHook: refused to save the checkpoint of iteration {runner.iter} '
                f'in {runner.work_dir}: it holds NaN or inf ({found}). No file was written and '
                'the checkpoints saved before are kept; resume or start from the latest of '
                f'them after fixing the cause. Look at: {self._switches(runner)}.')

    def _stop_message(self, runner, batch_idx: int, losses: Dict[str, float],
                      problems: List[str]) -> str:
        where = f'iteration {runner.iter + 1}'
        if hasattr(runner.train_loop, 'max_epochs'):
            where += f' (epoch {runner.epoch + 1}, its iteration {batch_idx + 1})'
        terms = ', '.join(f'{key}={_format_number(value)}' for key, value in losses.items())
        rates = sorted({lr for wrapper in self._optimizers
                        for lr in wrapper.wrapper.get_lr()['lr']})
        return (f'NonFiniteGuardHook: training stopped at {where} of {runner.work_dir}: '
                f'{"; ".join(problems) or "another rank found a non-finite value"}. '
                f'Loss terms: {terms or "none returned"}. Learning rate: '
                f'{", ".join(_format_number(lr) for lr in rates)}. No checkpoint was written '
                'from this iteration; the checkpoints saved before are kept. Look at: '
                f'{self._switches(runner)}.')

    def _switches(self, runner) -> str:
        """The config options and command-line switches that make a run diverge."""
        wrapper = self._optimizers[0].wrapper if self._optimizers else runner.optim_wrapper
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        loss_weight = {'labeler': 'model.labeler_weight (weight of loss_token)',
                       'student': 'model.token_loss.loss_weight (weight of loss_token)'}.get(
                           getattr(model, 'stl_mode', None),
                           "the loss_weight of the model's losses")
        switches = [
            'optim_wrapper.optimizer.lr (too high? also the warm-up in param_scheduler)',
            f'optim_wrapper.clip_grad (now {getattr(wrapper, "clip_grad_kwargs", None) or None};'
            ' e.g. clip_grad=dict(max_norm=5.0))', loss_weight
        ]
        if getattr(wrapper, 'loss_scaler', None) is not None:
            switches.append('--amp (float16 overflows: train without it, or set '
                            "optim_wrapper.dtype='bfloat16')")
        return '; '.join(switches)
