"""What tools/train.py and tools/test.py share: config preparation, CPU distributed set-up
and runner construction with checkpoints loaded through the package's strict loading API."""
import argparse
import os
import os.path as osp
from typing import Optional, Sequence

import torch
import torch.distributed as torch_dist
from mmengine.config import Config, DictAction
from mmengine.model import MMDistributedDataParallel, is_model_wrapper, revert_sync_batchnorm
from mmengine.registry import MODEL_WRAPPERS
from mmengine.runner import Runner

from stl_mm.models.backbones.fan_checkpoint import CheckpointReadError, load_checkpoint

__all__ = [
    'DictAction', 'prepare_config', 'set_resume', 'build_runner', 'build_test_runner',
    'close_distributed', 'NothingToResumeError'
]


def prepare_config(config: str,
                   work_dir: Optional[str] = None,
                   cfg_options: Optional[dict] = None,
                   launcher: str = 'none',
                   amp: bool = False) -> Config:
    """Read a config and apply the command-line choices every tool offers.

    Args:
        config: Path of the config file.
        work_dir: Overrides the config's ``work_dir``; defaults to ``work_dirs/<config name>``.
        cfg_options: ``--cfg-options`` key/value pairs, merged last.
        launcher: ``none``, ``pytorch`` (torchrun) or ``slurm``.
        amp: Use automatic mixed precision (``AmpOptimWrapper``).
    """
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.launcher = launcher
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs', osp.splitext(osp.basename(config))[0])
    if amp:
        if not torch.cuda.is_available():
            raise SystemExit('--amp needs a CUDA device (mmengine\'s AmpOptimWrapper uses the '
                             'CUDA grad scaler); drop --amp to train in float32 on CPU.')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if launcher != 'none' and not torch.cuda.is_available():
        _use_gloo_on_cpu(cfg)
    return cfg


def _use_gloo_on_cpu(cfg: Config) -> None:
    """Run ``--launcher pytorch`` on a machine without GPUs: one CPU process per rank.

    mmengine's own initialisation always selects a CUDA device and its default DDP wrapper pins
    ``device_ids`` to a GPU, so on CPU we open the gloo process group ourselves (the runner then
    skips its own) and wrap CPU modules with :class:`CPUDistributedDataParallel`.
    """
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend='gloo')
    cfg.env_cfg = dict(cfg.get('env_cfg', {}), dist_cfg=dict(backend='gloo'))
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper['type'] = 'CPUDistributedDataParallel'
    wrapper.setdefault('broadcast_buffers', False)
    wrapper['device_ids'] = None  # mmengine would otherwise fill in [LOCAL_RANK], a GPU index
    cfg.model_wrapper_cfg = wrapper


def close_distributed() -> None:
    """Wait for every rank, then close the process group; a no-op without one.

    Tools call this when their work is done. A rank that exits on its own tears its
    connections down under the others, and one that leaves the group to interpreter teardown
    can abort on exit ("terminate called without an active exception"): on two CPU ranks this
    failed 1 to 2 runs in 10 without it, none in 10 with it.
    """
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """DDP over CPU processes: SyncBN layers (the dense heads' default) become plain BN,
    because torch's SyncBatchNorm only trains on GPUs."""

    def __init__(self, module, **kwargs) -> None:
        super().__init__(module=revert_sync_batchnorm(module), **kwargs)


class NothingToResumeError(FileNotFoundError):
    """``--resume`` (``resume=True``) finds no checkpoint to resume from."""


def find_resume_checkpoint(cfg: Config) -> Optional[str]:
    """The checkpoint a resumed run continues from: ``load_from``, else the one the work
    dir's ``last_checkpoint`` names; None when the work dir has no ``last_checkpoint``.

    Raises:
        NothingToResumeError: ``load_from`` or the file ``last_checkpoint`` names is missing.
    """
    record = osp.join(cfg.work_dir, 'last_checkpoint')
    if cfg.get('load_from'):
        path, problem = cfg.load_from, 'no such file'
    elif osp.isfile(record):
        with open(record) as file:
            path = file.read().strip()
        problem = f'{record} names it, but it does not exist'
    else:
        return None
    if '://' not in path and not osp.isfile(path):
        raise NothingToResumeError(
            f'cannot resume from {path!r}: {problem}. Pass an existing checkpoint with '
            f'--resume PATH (e.g. an epoch_*.pth / iter_*.pth in {cfg.work_dir}), or drop '
            '--resume to start fresh.')
    return path


def _nothing_to_resume(cfg: Config) -> NothingToResumeError:
    return NothingToResumeError(
        f'--resume: nothing to resume in the work dir {osp.abspath(cfg.work_dir)!r} (it has '
        'no last_checkpoint file, which training writes with every checkpoint). Check '
        '--work-dir (it defaults to work_dirs/<config name>), pass a checkpoint with --resume '
        'PATH, or start fresh: drop --resume, or use --resume-if-possible.')


def set_resume(cfg: Config, resume: Optional[str], if_possible: bool = False) -> None:
    """Apply ``--resume [PATH]`` and ``--resume-if-possible`` to a config.

    Args:
        cfg: The training config (its ``work_dir`` set).
        resume: ``'auto'`` (the latest checkpoint of the work dir), a checkpoint path, or None.
        if_possible: Resume from the latest checkpoint of the work dir when it has one, else
            start fresh (for jobs that are restarted after preemption).

    Raises:
        NothingToResumeError: ``resume`` is given and there is nothing to resume from.
    """
    if resume is None and not if_possible:
        return
    cfg.resume, cfg.load_from = True, (None if resume in (None, 'auto') else resume)
    if find_resume_checkpoint(cfg) is not None:
        return
    if not if_possible:
        raise _nothing_to_resume(cfg)
    print(f'--resume-if-possible: no checkpoint in {cfg.work_dir}, starting fresh.')
    cfg.resume = False


def _resume_strictly(cfg: Config) -> None:
    """Point ``load_from`` at the checkpoint a ``resume=True`` run continues from, and give
    the run that checkpoint's seed when the config leaves it random (``seed=None``): the
    samplers and data-loader workers are seeded before mmengine reads the checkpoint."""
    path = find_resume_checkpoint(cfg)
    if path is None:
        raise _nothing_to_resume(cfg)
    cfg.load_from = path
    randomness = cfg.get('randomness') or {}
    if randomness.get('seed') is None and '://' not in path:
        try:
            meta = torch.load(path, map_location='cpu', mmap=True, weights_only=True)['meta']
        except Exception as error:  # noqa: B902  (damaged files raise any type)
            raise CheckpointReadError(path, f'{type(error).__name__}: {error}') from error
        cfg.randomness = dict(randomness, seed=meta.get('seed'))


def _add_training_safety(cfg: Config) -> None:
    """Checkpoints that survive a kill (:class:`~stl_mm.engine.hooks.SafeCheckpointHook`
    replaces mmengine's ``CheckpointHook``), an exact resume
    (:class:`~stl_mm.engine.hooks.RandomStateHook`) and a stop at the first non-finite loss
    (:class:`~stl_mm.engine.hooks.NonFiniteGuardHook`); a hook the config lists is kept."""
    hooks = cfg.get('default_hooks') or {}
    checkpoint = hooks.get('checkpoint', dict(type='CheckpointHook', interval=1))
    if isinstance(checkpoint, dict) and checkpoint.get('type') == 'CheckpointHook':
        cfg.default_hooks = dict(hooks, checkpoint=dict(checkpoint, type='SafeCheckpointHook'))
    for hook_type in ('RandomStateHook', 'NonFiniteGuardHook'):
        listed = [*(cfg.get('custom_hooks') or []), *(cfg.get('default_hooks') or {}).values()]
        if not any(isinstance(hook, dict) and hook.get('type') == hook_type for hook in listed):
            cfg.custom_hooks = [*(cfg.get('custom_hooks') or []), dict(type=hook_type)]


def build_runner(cfg: Config) -> Runner:
    """Build the runner the config asks for (``runner_type``) in the config's default scope.

    A ``load_from`` (fine-tuning, or starting from a checkpoint) is loaded strictly through
    :func:`~stl_mm.models.backbones.fan_checkpoint.load_checkpoint` by a
    :class:`~stl_mm.engine.hooks.LoadCheckpointHook`, not by mmengine's non-strict loader;
    the config's ``load_from_reinit`` (key prefixes, e.g. ``'head.'``) names the keys allowed
    to differ, which keep their initial values and are logged. A resumed run (``resume``)
    keeps mmengine's resume, and refuses to start without a checkpoint to resume from.

    Every run saves its checkpoints with
    :class:`~stl_mm.engine.hooks.SafeCheckpointHook` and its random state with
    :class:`~stl_mm.engine.hooks.RandomStateHook`, so a resumed run continues exactly, and
    gets a :class:`~stl_mm.engine.hooks.NonFiniteGuardHook` (stop at the first non-finite loss,
    never save non-finite weights) unless the config lists one.
    """
    reinit = cfg.pop('load_from_reinit', ())
    _add_training_safety(cfg)
    if cfg.get('resume'):
        _resume_strictly(cfg)
    if cfg.get('load_from') and not cfg.get('resume'):
        cfg.custom_hooks = [*(cfg.get('custom_hooks') or []),
                            dict(type='LoadCheckpointHook', checkpoint=cfg.load_from,
                                 reinit=reinit)]
        cfg.load_from = None
    elif reinit:
        raise ValueError(f'load_from_reinit={reinit!r} names keys to re-initialise when '
                         'load_from loads a checkpoint, but '
                         + ('the run resumes (resume=True).' if cfg.get('resume') else
                            'load_from is not set.') + ' Set load_from=PATH, or drop '
                         'load_from_reinit.')
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    from mmengine.registry import RUNNERS
    return RUNNERS.build(cfg)


def build_test_runner(cfg: Config, checkpoint: str, use_ema: bool = True) -> Runner:
    """A runner whose model holds ``checkpoint``'s weights, ready for ``runner.test()`` or for
    test loops driven by the caller (robustness cells). The one way tools load for evaluation.

    The weights are loaded strictly with
    :func:`~stl_mm.models.backbones.fan_checkpoint.load_checkpoint` into the (unwrapped) model
    on every rank, before anything runs: a checkpoint that does not fit the config (another
    head, another FAN width, a block missing) stops with the fit message. Official FAN / STL
    checkpoints are converted in memory.

    Args:
        cfg: The test config (its ``load_from`` and ``resume`` are ignored).
        checkpoint: Checkpoint file, ours (mmengine) or official.
        use_ema: The EMA rule: EMA weights when the file holds both; False takes the raw ones.
    """
    cfg.load_from, cfg.resume = None, False
    cfg.pop('load_from_reinit', None)
    runner = build_runner(cfg)
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    load_checkpoint(model, checkpoint, use_ema)
    return runner


def parse_launcher_env(local_rank: Optional[int]) -> None:
    """Expose ``--local_rank`` (old ``torch.distributed.launch``) as ``LOCAL_RANK``."""
    if local_rank is not None and 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(local_rank)


LAUNCHERS: Sequence[str] = ('none', 'pytorch', 'slurm')


def add_launcher_arguments(parser: argparse.ArgumentParser) -> None:
    """``--launcher`` and ``--local_rank``, the distributed options every tool takes."""
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=None)
