"""Training runs of the demo and its study: reused when they finished with the same settings,
otherwise trained through ``tools/train.py`` in child processes, several side by side.

Every run that finishes leaves ``demo_manifest.json`` in its work directory: the settings that
produced it (seed, sizes, epochs, the resolved config's hash, the options and, for a student,
the teacher checkpoint's hash) and its final checkpoint's hash. A rerun reuses a run whose
manifest matches the requested settings and whose checkpoint is unchanged, and retrains the
others from scratch (a run killed mid-way has no manifest: it is retrained, not resumed).
With ``skip_training`` a run that cannot be reused is refused before anything trains.
"""
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config

from stl_mm.evaluation.reports import write_json
from stl_mm.utils import REPO_ROOT, file_sha256, json_sha256

__all__ = ['MANIFEST', 'THREAD_ENV', 'TrainingRun', 'RunRefused', 'RunFailed', 'config_sha256',
           'write_manifest', 'differences', 'finished_run', 'train_run', 'execute_runs']

TRAIN_SCRIPT = osp.join(REPO_ROOT, 'tools', 'train.py')
#: What a finished run leaves in its work directory (see the module docstring).
MANIFEST = 'demo_manifest.json'
#: Where a run's console output goes when several train side by side.
CONSOLE_LOG = 'console.log'
# One compute thread per process: the data loader worker takes the second core. On a busy or
# shared machine two OpenMP threads per process are also many times slower than one.
COMPUTE_THREADS = 1
THREAD_ENV = {'OMP_NUM_THREADS': str(COMPUTE_THREADS), 'MKL_NUM_THREADS': str(COMPUTE_THREADS)}
PROGRESS_INTERVAL_S = 60
PROGRESS = re.compile(r'Epoch\(train\)\s+\[(\d+)\]\[\s*(\d+/\d+)\]')


class RunRefused(RuntimeError):
    """An earlier run cannot be reused with the requested settings (``skip_training``)."""

    def __init__(self, name: str, reason: str):
        self.name, self.reason = name, reason
        super().__init__(f'--skip-training cannot reuse {name}: {reason}.')


class RunFailed(RuntimeError):
    """The training of a run failed (its child process exited non-zero)."""

    def __init__(self, run: 'TrainingRun', returncode: int):
        self.run, self.returncode = run, returncode
        super().__init__(f'Training of {run.name} failed (tools/train.py exited with '
                         f'{returncode}); its log is in {run.work_dir}.')


@dataclass(frozen=True)
class TrainingRun:
    """One ``tools/train.py`` run.

    Attributes:
        name: Unique name, e.g. ``'baseline'`` or ``'seed1/argmax'``.
        config: The config file.
        work_dir: Its work directory (checkpoints, logs, manifest).
        epochs: Training epochs (the final checkpoint is ``epoch_<epochs>.pth``).
        options: ``--cfg-options`` entries (``key=value``); epochs, validation and checkpoint
            intervals are added.
        data_options: ``--cfg-options`` saying where the data lives: passed but not recorded
            in the manifest (the same data in another folder trains the same model).
        settings: What decides the result besides the config and options (seed, sizes, ...).
        teacher: Name of the run whose final checkpoint is this run's frozen teacher.
        title: What the console prints when the run starts.
    """
    name: str
    config: str
    work_dir: str
    epochs: int
    options: Tuple[str, ...] = ()
    data_options: Tuple[str, ...] = ()
    settings: dict = field(default_factory=dict, hash=False, compare=False)
    teacher: Optional[str] = None
    title: str = ''

    def command(self, teacher_checkpoint: Optional[str] = None) -> List[str]:
        options = [*self.options, *self.data_options, f'train_cfg.max_epochs={self.epochs}',
                   f'train_cfg.val_interval={self.epochs}',
                   f'default_hooks.checkpoint.interval={self.epochs}']
        if teacher_checkpoint is not None:
            options.append(f'default_hooks.teacher.checkpoint={teacher_checkpoint}')
        return [sys.executable, TRAIN_SCRIPT, self.config, '--work-dir', self.work_dir,
                '--cfg-options', *options]

    def final_checkpoint(self) -> str:
        """The checkpoint of the last epoch, which a finished training leaves."""
        path = osp.join(self.work_dir, f'epoch_{self.epochs}.pth')
        if not osp.isfile(path):
            raise RuntimeError(f'Training of {self.name} ended without its final checkpoint '
                               f'{path}: see the training log in {self.work_dir}.')
        return path


def config_sha256(config_file: str) -> str:
    """The SHA-256 of a config resolved with its bases (a change to a base changes it too)."""
    return json_sha256(Config.fromfile(config_file).to_dict())


def run_settings(run: TrainingRun, teacher_checkpoint: Optional[str] = None) -> dict:
    """Everything that decides what a run trains: a finished run is reused only for these."""
    settings = dict(run.settings, epochs=run.epochs, config_sha256=config_sha256(run.config))
    if run.options:
        settings['options'] = list(run.options)
    if teacher_checkpoint is not None:
        settings['teacher_checkpoint_sha256'] = file_sha256(teacher_checkpoint)
    return settings


def write_manifest(work_dir: str, settings: dict, checkpoint: str) -> dict:
    """Record a finished run, atomically: a kill leaves the old manifest or the new one."""
    manifest = dict(settings=settings, checkpoint=osp.relpath(checkpoint, work_dir),
                    checkpoint_sha256=file_sha256(checkpoint))
    write_json(manifest, osp.join(work_dir, MANIFEST))
    return manifest


def differences(recorded: dict, requested: dict) -> str:
    """The settings that differ, as 'seed 0 in the run, 1 requested; ...'."""
    return '; '.join(f'{key} {recorded.get(key)} in the run, {requested.get(key)} requested'
                     for key in sorted(set(recorded) | set(requested))
                     if recorded.get(key) != requested.get(key))


def finished_run(work_dir: str, settings: dict) -> Tuple[Optional[dict], str]:
    """The manifest of a finished run of ``settings`` in ``work_dir``, or why there is none.

    Returns:
        ``(manifest, '')`` when the run's manifest records exactly ``settings`` and its final
        checkpoint (``manifest['checkpoint']``, made absolute) is unchanged, else
        ``(None, reason)``.
    """
    path = osp.join(work_dir, MANIFEST)
    if not osp.isdir(work_dir):
        return None, f'{work_dir} has no finished run (not trained yet)'
    if not osp.isfile(path):
        return None, (f'{work_dir} has no finished run (no {MANIFEST}: killed before it '
                      'finished, or trained by an older demo)')
    try:
        with open(path) as file:
            manifest = json.load(file)
        recorded = manifest['settings']
        checkpoint = osp.join(work_dir, manifest['checkpoint'])
        checkpoint_hash = manifest['checkpoint_sha256']
    except (OSError, ValueError, KeyError, TypeError) as error:
        return None, f'its {path} is unreadable ({error!r})'
    if recorded != settings:
        return None, f'its run in {work_dir} was trained with other settings: ' + differences(
            recorded, settings)
    if not osp.isfile(checkpoint) or file_sha256(checkpoint) != checkpoint_hash:
        return None, (f'its final checkpoint {checkpoint} is missing or changed since the run '
                      'finished')
    return dict(manifest, checkpoint=checkpoint), ''


def train_run(run: TrainingRun, teacher_checkpoint: Optional[str] = None,
              log_file: Optional[str] = None) -> float:
    """Train one run with tools/train.py in a child process; return its wall time.

    Args:
        run: The run.
        teacher_checkpoint: The frozen teacher's checkpoint (students only).
        log_file: Where the child's console output goes (None: this console).

    Raises:
        subprocess.CalledProcessError: The child exited non-zero.
    """
    command = run.command(teacher_checkpoint)
    print(f'\n=== {run.title or run.name}\n$ {" ".join(command)}', flush=True)
    os.makedirs(run.work_dir, exist_ok=True)
    start = time.perf_counter()
    env = dict(os.environ, **THREAD_ENV)
    if log_file is None:
        subprocess.run(command, check=True, cwd=REPO_ROOT, env=env)
    else:
        with open(log_file, 'w') as log:
            subprocess.run(command, check=True, cwd=REPO_ROOT, env=env, stdout=log,
                           stderr=subprocess.STDOUT)
    return time.perf_counter() - start


def _last_progress(log_file: str) -> str:
    """The last ``[epoch][iter/iters]`` of a console log, for the progress line."""
    try:
        with open(log_file, 'rb') as file:
            file.seek(max(0, osp.getsize(log_file) - 4096))
            text = file.read().decode(errors='replace')
    except OSError:
        return 'starting'
    found = PROGRESS.findall(text)
    return 'epoch {}, iteration {}'.format(*found[-1]) if found else 'starting'


def _tail(log_file: str, lines: int = 15) -> str:
    try:
        with open(log_file, errors='replace') as file:
            return ''.join(deque(file, maxlen=lines))
    except OSError:
        return ''


def execute_runs(runs: Sequence[TrainingRun], jobs: int = 1,
                 skip_training: bool = False) -> Tuple[Dict[str, dict], Dict[str, float]]:
    """Reuse or train every run, ``jobs`` at a time; return the manifests and the wall times.

    A run starts once its teacher has finished. With ``jobs > 1`` each child's console output
    goes to ``console.log`` in its work directory and a progress line is printed every minute.
    When a run fails, the runs already training finish, nothing new starts, and the failure is
    raised.

    Returns:
        ``(manifests, timing)``: every run's manifest by name (``checkpoint`` absolute, plus
        ``trained_now``) and the training wall time of each run trained now.

    Raises:
        RunRefused: with ``skip_training``, for the first run that cannot be reused.
        RunFailed: for the first run whose training failed.
    """
    by_name = {run.name: run for run in runs}
    missing = [run.teacher for run in runs if run.teacher is not None and
               run.teacher not in by_name]
    if missing:
        raise ValueError(f'Runs name teachers that are not among them: {missing}.')
    manifests: Dict[str, dict] = {}
    timing: Dict[str, float] = {}
    to_train: List[TrainingRun] = []
    # Reuse pass, in dependency order: a student of a retrained teacher is retrained too.
    for run in _dependency_order(runs):
        if run.teacher is not None and run.teacher not in manifests:
            print(f'[demo] {run.name}: training from scratch once its teacher {run.teacher} is '
                  'trained.', flush=True)
            to_train.append(run)
            continue
        teacher = manifests[run.teacher]['checkpoint'] if run.teacher else None
        manifest, reason = finished_run(run.work_dir, run_settings(run, teacher))
        if manifest is not None:
            print(f'[demo] {run.name}: finished earlier with the same settings '
                  f'({osp.join(run.work_dir, MANIFEST)}): not retrained.', flush=True)
            manifests[run.name] = dict(manifest, trained_now=False)
        elif skip_training:
            raise RunRefused(run.name, reason)
        else:
            print(f'[demo] {run.name}: training from scratch: {reason}.', flush=True)
            to_train.append(run)
    if skip_training and to_train:
        raise RunRefused(to_train[0].name,
                         f'its teacher {to_train[0].teacher} has no finished run')

    # In the given order (e.g. seed by seed), not the reuse pass's teachers-first order.
    order = {run.name: index for index, run in enumerate(runs)}
    pending = sorted(to_train, key=lambda run: order[run.name])
    running: Dict[Future, Tuple[TrainingRun, dict, Optional[str]]] = {}
    failure: Optional[RunFailed] = None
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        while pending or running:
            ready = [run for run in pending if run.teacher is None or run.teacher in manifests]
            while failure is None and ready and len(running) < max(1, jobs):
                run = ready.pop(0)
                pending.remove(run)
                teacher = manifests[run.teacher]['checkpoint'] if run.teacher else None
                settings = run_settings(run, teacher)
                # Removed first: a run killed from here on leaves no manifest: retrained.
                if osp.isfile(osp.join(run.work_dir, MANIFEST)):
                    os.remove(osp.join(run.work_dir, MANIFEST))
                log_file = osp.join(run.work_dir, CONSOLE_LOG) if jobs > 1 else None
                if log_file:
                    os.makedirs(run.work_dir, exist_ok=True)
                future = pool.submit(train_run, run, teacher, log_file)
                running[future] = (run, settings, log_file)
            if not running:
                break
            done, _ = wait(running, timeout=PROGRESS_INTERVAL_S, return_when=FIRST_COMPLETED)
            if not done:
                print('[demo] training: ' + '; '.join(
                    f'{run.name} {_last_progress(log)}' for run, _, log in running.values()
                    if log), flush=True)
            for future in done:
                run, settings, log_file = running.pop(future)
                try:
                    timing[run.name] = future.result()
                except subprocess.CalledProcessError as error:
                    if log_file:
                        print(f'[demo] {run.name} failed; the end of {log_file}:\n'
                              f'{_tail(log_file)}', flush=True)
                    failure = failure or RunFailed(run, error.returncode)
                    continue
                checkpoint = run.final_checkpoint()
                manifests[run.name] = dict(write_manifest(run.work_dir, settings, checkpoint),
                                           checkpoint=checkpoint, trained_now=True)
                print(f'[demo] {run.name}: trained in {timing[run.name]:.0f} s.', flush=True)
            if failure is not None and not running:
                break
    if failure is not None:
        raise failure
    return {run.name: manifests[run.name] for run in runs}, timing


def _dependency_order(runs: Sequence[TrainingRun]) -> List[TrainingRun]:
    """Teachers before their students, otherwise in the given order."""
    ordered: List[TrainingRun] = []
    names = set()
    remaining = list(runs)
    while remaining:
        ready = [run for run in remaining if run.teacher is None or run.teacher in names]
        if not ready:
            raise ValueError('The runs\' teachers form a cycle: '
                             f'{[run.name for run in remaining]}.')
        for run in ready:
            ordered.append(run)
            names.add(run.name)
            remaining.remove(run)
    return ordered
