"""CheckpointHook that never removes a good checkpoint before its successor is complete."""
import glob
import os.path as osp
from typing import List

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook

from stl_mm.utils import TEMP_PREFIX, write_bytes
from stl_mm.registry import register


@register('HOOKS')
class SafeCheckpointHook(CheckpointHook):
    """mmengine's :class:`~mmengine.hooks.CheckpointHook` (same arguments), safe to kill.

    :func:`~stl_mm.engine.runner_setup.build_runner` puts it in place of every config's
    ``default_hooks.checkpoint`` of type ``CheckpointHook``. mmengine removes the oldest
    checkpoint (``max_keep_ckpts``) and the previous best one (``save_best``) *before* writing
    the new one, so a run killed while saving with ``max_keep_ckpts=1`` kept no checkpoint at
    all and ``last_checkpoint`` named a missing file. This hook

    - writes each checkpoint atomically (:mod:`stl_mm.compat.atomic_checkpoint`: temporary file,
      then rename), so a file under a checkpoint name is always complete;
    - rewrites ``work_dir/last_checkpoint`` atomically, after the checkpoint it names;
    - removes the checkpoints that fall out of ``max_keep_ckpts`` (and the previous best) only
      after that, so a kill at any moment leaves ``last_checkpoint`` naming a complete file;
    - removes temporary files a killed save left behind, when training starts.
    """

    def before_train(self, runner) -> None:
        """Set up as mmengine does, then clear the temporary files of a killed save."""
        super().before_train(runner)
        if is_main_process() and '://' not in self.out_dir:
            for leftover in glob.glob(osp.join(self.out_dir, TEMP_PREFIX + '*.pth.*')):
                runner.logger.info(f'SafeCheckpointHook: removing {leftover}, left by a save '
                                   'that was interrupted.')
                self.file_backend.remove(leftover)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        """Save ``step``'s checkpoint, point ``last_checkpoint`` at it, then rotate."""
        stale = self._rotate(runner, step)
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir, filename, self.file_client_args, save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler, meta=meta, by_epoch=self.by_epoch,
            backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        write_bytes(self.last_ckpt.encode(), osp.join(runner.work_dir, 'last_checkpoint'))
        for old_step in stale:
            self._remove(self.file_backend.join_path(self.out_dir,
                                                     self.filename_tmpl.format(old_step)))

    def _rotate(self, runner, step) -> List[int]:
        """Record ``step`` among the kept checkpoints; return the steps that fall out.

        The message hub (saved in the checkpoint) lists the kept steps without the ones that
        fall out, as mmengine's does, so a resumed run removes exactly what this one would.
        """
        if self.max_keep_ckpts <= 0 or (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            return []  # a second save of one step (the best-checkpoint update) keeps the list
        kept = [*self.keep_ckpt_ids, step]
        stale = kept[:-self.max_keep_ckpts]
        self.keep_ckpt_ids.clear()
        self.keep_ckpt_ids.extend(kept[-self.max_keep_ckpts:])
        runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        return stale

    def _save_best_checkpoint(self, runner, metrics) -> None:
        """mmengine's best-checkpoint logic, removing the previous best after the new one."""
        backend = self.file_backend
        self.file_backend = _DeferredRemoval(backend)
        try:
            super()._save_best_checkpoint(runner, metrics)
        finally:
            deferred, self.file_backend = self.file_backend, backend
        for path in deferred.paths:
            self._remove(path)

    def _remove(self, path: str) -> None:
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)
        elif self.file_backend.isdir(path):  # DeepSpeed checkpoints are folders
            self.file_backend.rmtree(path)


class _DeferredRemoval:
    """A file backend that records removals instead of doing them; the rest passes through."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.paths: List[str] = []

    def remove(self, path: str) -> None:
        self.paths.append(path)

    rmtree = remove

    def __getattr__(self, name: str):
        return getattr(self.backend, name)
