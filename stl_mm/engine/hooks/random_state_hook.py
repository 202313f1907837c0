"""Hook that saves the random state of a run in its checkpoints and restores it on resume."""
import random
import warnings
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.runner import IterBasedTrainLoop

from stl_mm.registry import register

RandomState = Dict[str, Any]


def capture_random_state() -> RandomState:
    """The state of every global generator a run draws from: Python's ``random``, numpy's
    legacy generator, torch's CPU generator and (when initialised) every CUDA device's.

    Plain tensors, lists and numbers only, so checkpoints still load with
    ``torch.load(weights_only=True)``.
    """
    numpy_state = np.random.get_state(legacy=False)
    numpy_state['state'] = dict(numpy_state['state'], key=numpy_state['state']['key'].tolist())
    state = dict(python=random.getstate(), numpy=numpy_state, torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_random_state(state: RandomState) -> None:
    """Put back a state of :func:`capture_random_state`."""
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    numpy_state = dict(state['numpy'])
    numpy_state['state'] = dict(numpy_state['state'],
                                key=np.asarray(numpy_state['state']['key'], dtype=np.uint32))
    np.random.set_state(numpy_state)
    torch.set_rng_state(state['torch'].cpu())  # a resume maps the checkpoint to the device
    if 'cuda' in state and torch.cuda.is_available():
        if len(state['cuda']) != torch.cuda.device_count():
            warnings.warn(
                f'RandomStateHook: the checkpoint holds the random state of '
                f'{len(state["cuda"])} CUDA devices, this process sees '
                f'{torch.cuda.device_count()}; only the first ones are restored, so the resumed '
                'run is not exact. Resume with the same CUDA_VISIBLE_DEVICES for an exact one.')
        for device, cuda_state in enumerate(state['cuda'][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), device)


@register('HOOKS')
class RandomStateHook(Hook):
    """Make a resumed run draw the random numbers the uninterrupted run would have drawn.

    :func:`~stl_mm.engine.runner_setup.build_runner` adds it to every training run.
    mmengine restores weights, optimizer, schedulers, EMA and the sampler's epoch when it
    resumes, but re-seeds every generator: data augmentation, Mixup/CutMix, drop-path and the
    Gumbel draws of the token-label loss then restart. This hook

    - stores :func:`capture_random_state` in every checkpoint (``meta['random_state']``);
    - on resume, restores it just before the first batch of the resumed run is drawn: at the
      start of the epoch (epoch-based loops), or after mmengine's loop has skipped the batches
      already trained (iteration-based loops);
    - keeps validation from consuming the training run's random numbers (the state is put back
      after every validation), so training draws do not depend on when validation ran, and a
      run resumed after a checkpoint draws what the uninterrupted run drew after validating.

    Samplers need nothing more: mmengine's ``DefaultSampler`` shuffles by ``seed + epoch`` and
    its ``InfiniteSampler`` is replayed by the loop; data-loader workers are re-seeded from
    ``seed``, rank and worker id whenever they start (``persistent_workers=False``). Persistent
    workers (``persistent_workers=True``, ``num_workers > 0``) carry their generators across
    epochs and are not saved: resuming such a run logs a warning.

    Exact for checkpoints saved where the loop resumes (epoch ends of epoch-based loops, any
    iteration of iteration-based ones), in one process; a multi-process run stores rank 0's
    state, which every rank restores.
    """

    priority = 'VERY_HIGH'  # validation's draws are undone before any other after_val hook

    def __init__(self) -> None:
        self._resumed: Optional[RandomState] = None
        self._before_validation: Optional[RandomState] = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Store the training run's random state (outside validation's draws)."""
        checkpoint.setdefault('meta', {})['random_state'] = (
            self._before_validation or capture_random_state())

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Keep the state of a checkpoint the run resumes from, to restore it at the start."""
        if runner.cfg.get('resume'):
            self._resumed = checkpoint.get('meta', {}).get('random_state')
            if self._resumed is None:
                runner.logger.warning('RandomStateHook: the checkpoint holds no random state '
                                      '(saved without stl_mm); the resumed run draws other '
                                      'random numbers than the uninterrupted run.')
            self._warn_about_persistent_workers(runner)

    def before_train_epoch(self, runner) -> None:
        """Restore the resumed state before the first batch of the resumed run is drawn."""
        if self._resumed is None:
            return
        state, self._resumed = self._resumed, None
        loop = runner.train_loop
        if isinstance(loop, IterBasedTrainLoop) and loop.iter > 0:
            # The loop draws `iter` batches to skip them once this hook has run.
            loop.dataloader_iterator = _RestoreAfter(
                loop.dataloader_iterator, skipped=loop.iter,
                restore=lambda: restore_random_state(state), owner=loop)
        else:
            restore_random_state(state)

    def before_val_epoch(self, runner) -> None:
        """Remember the training run's state before validation draws from it."""
        self._before_validation = capture_random_state()

    def after_val_epoch(self, runner, metrics=None) -> None:
        """Put the training run's state back."""
        if self._before_validation is not None:
            restore_random_state(self._before_validation)
            self._before_validation = None

    @staticmethod
    def _warn_about_persistent_workers(runner) -> None:
        loader = runner.train_dataloader
        if getattr(loader, 'persistent_workers', False) and loader.num_workers > 0:
            runner.logger.warning(
                'RandomStateHook: train_dataloader has persistent_workers=True: its '
                f'{loader.num_workers} worker(s) restart from their seeds, so the resumed '
                'epochs augment the data otherwise than the uninterrupted run would. For an '
                'exact resume set train_dataloader.persistent_workers=False.')


class _RestoreAfter:
    """Iterator that calls ``restore`` before drawing batch ``skipped + 1``, then hands the
    wrapped iterator back to ``owner`` (the loop reads ``owner.dataloader_iterator`` anew for
    every batch)."""

    def __init__(self, iterator, skipped: int, restore: Callable[[], None], owner) -> None:
        self.iterator, self.left, self.restore, self.owner = iterator, skipped, restore, owner

    def __iter__(self):
        return self

    def __next__(self):
        if self.left == 0:
            self.restore()
            self.owner.dataloader_iterator = self.iterator
        self.left -= 1
        return next(self.iterator)
