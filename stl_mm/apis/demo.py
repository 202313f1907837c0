"""`make demo`: Self-emerging Token Labeling end to end on Fashion-MNIST, on CPU, in minutes.

Trains, through ``tools/train.py`` and mmengine's Runner with the configs in
``configs/stl/demo/``:

1. STL stage 1: a small FAN token labeler (patch 4 on 32x32 inputs, 8x8 tokens);
2. STL stage 2: a student of the same FAN trained with the frozen stage-1 teacher (dual
   views, hard Gumbel-softmax token labels);
3. a baseline of the same FAN without token labels, with the same data and budget;

then writes ``report.md`` and ``report.json`` to the work directory and prints them: clean and
Fashion-MNIST-C top-1 (:mod:`stl_mm.apis.demo_robustness`), the token-label quality of the
teacher against ground-truth foreground masks, and a Fig. 2-style PNG of the teacher's token
labels (:mod:`stl_mm.visualization.token_labels`). The command line is ``tools/demo.py``.

Every stage that finishes leaves ``demo_manifest.json`` in its work directory: the settings
that produced it (seed, sizes, epochs, the resolved config's hash and, for the student, the
teacher checkpoint's hash) and its final checkpoint's hash. A rerun reuses a stage whose
manifest matches the requested settings and whose checkpoint is unchanged, and retrains the
others from scratch (a stage killed mid-way has no manifest: it is retrained, not resumed);
``--skip-training`` refuses a stage it cannot reuse, so one report never mixes runs.
"""
import copy
import json
import os
import os.path as osp
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from mmcv.transforms import Compose
from mmengine.config import Config
from mmpretrain.registry import DATASETS, MODELS, TRANSFORMS

from stl_mm.apis.demo_report import print_tables, render_markdown
from stl_mm.apis.demo_robustness import evaluate_robustness
from stl_mm.apis.token_labeler import build_view_dataset, collect_views, load_token_labeler
from stl_mm.datasets.fashion_mnist import DEFAULT_DATA_DIR, prepare_fashion_mnist
from stl_mm.evaluation.reports import write_json
from stl_mm.evaluation.robustness.fashion_mnist_c import fashion_mnist_c_results
from stl_mm.evaluation.token_label_quality import (FOREGROUND_PIXEL_THRESHOLD, foreground_pixels,
                                                   foreground_tokens, token_label_quality)
from stl_mm.models.backbones.fan_checkpoint import load_checkpoint
from stl_mm.utils import REPO_ROOT, file_sha256, json_sha256
from stl_mm.visualization import visualize_token_labels

__all__ = ['DemoSizes', 'DemoStageError', 'FULL', 'QUICK', 'STAGES', 'StageFailed', 'StageRefused',
           'check_seed', 'demo_sizes', 'prepare_stages', 'run_demo']

#: The repository checkout the package runs from: the demo needs its configs and train tool.
CONFIG_DIR = osp.join(REPO_ROOT, 'configs', 'stl', 'demo')
TRAIN_SCRIPT = osp.join(REPO_ROOT, 'tools', 'train.py')
# One compute thread per process: the data loader worker takes the second core. On a busy or
# shared machine two OpenMP threads per process are also many times slower than one.
COMPUTE_THREADS = 1
THREAD_ENV = {'OMP_NUM_THREADS': str(COMPUTE_THREADS), 'MKL_NUM_THREADS': str(COMPUTE_THREADS)}
FASHION_MNIST_TRAIN_IMAGES = 60_000
#: numpy's seed range (mmengine seeds Python, numpy and torch with the same number).
MAX_SEED = 2**32 - 1
#: What a finished stage leaves in its work directory (see the module docstring).
MANIFEST = 'demo_manifest.json'


class DemoStageError(RuntimeError):
    """A stage stopped the demo; the message says which and what to do."""


class StageRefused(DemoStageError):
    """An earlier run of a stage cannot be reused with the requested settings."""


class StageFailed(DemoStageError):
    """The training of a stage failed (its child process exited non-zero)."""


@dataclass(frozen=True)
class Stage:
    """One training run of the demo."""
    name: str
    config: str
    title: str


STAGES = (
    Stage('stage1_token_labeler', 'fan_demo_token_labeler.py', 'STL stage 1: token labeler'),
    Stage('stage2_student', 'fan_demo_student.py',
          'STL stage 2: student with the frozen stage-1 teacher'),
    Stage('baseline', 'fan_demo_baseline.py', 'Baseline: same FAN, no token labels'),
)


@dataclass(frozen=True)
class DemoSizes:
    """How much the demo trains and evaluates."""
    train_images: int = 8000  # first images of the 60k training set
    epochs: int = 5  # of the student and the baseline (the same budget)
    teacher_epochs: int = 10  # of the stage-1 token labeler, trained once for every student
    clean_images: Optional[int] = None  # None: the whole 10k test set
    corruption_images: int = 400  # seeded test subset corrupted 15 x 5 times
    token_label_images: int = 1000  # seeded test subset for the token-label quality
    gumbel_draws: int = 5
    figure_images: int = 6


FULL = DemoSizes()
QUICK = DemoSizes(train_images=256, epochs=2, teacher_epochs=2, clean_images=256,
                  corruption_images=16, token_label_images=64, gumbel_draws=2, figure_images=3)


def demo_sizes(quick: bool = False,
               train_images: Optional[int] = None,
               epochs: Optional[int] = None,
               teacher_epochs: Optional[int] = None) -> DemoSizes:
    """The sizes of a full (or quick) run with the given overrides (None keeps the default).

    Raises:
        ValueError: naming the option when an override is out of range.
    """
    sizes = QUICK if quick else FULL
    if train_images is not None:
        if not 1 <= train_images <= FASHION_MNIST_TRAIN_IMAGES:
            raise ValueError(f'--train-images must be at least 1 and at most '
                             f'{FASHION_MNIST_TRAIN_IMAGES} (the Fashion-MNIST training set), '
                             f'got {train_images}.')
        sizes = replace(sizes, train_images=train_images)
    for option, field, value in (('--epochs', 'epochs', epochs),
                                 ('--teacher-epochs', 'teacher_epochs', teacher_epochs)):
        if value is None:
            continue
        if value < 2:
            raise ValueError(f'{option} must be at least 2: the schedule warms up for one epoch '
                             f'and then decays; got {value}.')
        sizes = replace(sizes, **{field: value})
    return sizes


def check_seed(seed: int) -> None:
    """Refuse a ``--seed`` that numpy (seeded by mmengine with the same number) cannot take."""
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f'--seed must be at least 0 and at most {MAX_SEED} (the seed range of '
                         f'numpy, which training seeds with it), got {seed}.')


# ----------------------------------------------------------------------------- training
def stage_epochs(stage: Stage, sizes: DemoSizes) -> int:
    """The epochs a stage trains for."""
    return sizes.teacher_epochs if stage.name == 'stage1_token_labeler' else sizes.epochs


def final_checkpoint(stage: Stage, work_dir: str, sizes: DemoSizes) -> str:
    """The checkpoint of a stage's last epoch, which a finished training leaves."""
    path = osp.join(work_dir, f'epoch_{stage_epochs(stage, sizes)}.pth')
    if not osp.isfile(path):
        raise RuntimeError(f'Training of {stage.name} ended without its final checkpoint '
                           f'{path}: see the training log in {work_dir}.')
    return path


def train_stage(stage: Stage, work_dir: str, data_dir: str, sizes: DemoSizes, seed: int,
                teacher_checkpoint: Optional[str] = None) -> float:
    """Train one stage with tools/train.py in a child process; return its wall time."""
    epochs = stage_epochs(stage, sizes)
    options = [
        f'randomness.seed={seed}',
        f'train_cfg.max_epochs={epochs}',
        f'train_cfg.val_interval={epochs}',
        f'default_hooks.checkpoint.interval={epochs}',
        f'train_dataloader.dataset.indices={sizes.train_images}',
        f'train_dataloader.dataset.data_prefix={data_dir}',
        f'val_dataloader.dataset.data_prefix={data_dir}',
        f'test_dataloader.dataset.data_prefix={data_dir}',
    ]
    if sizes.clean_images is not None:
        options.append(f'val_dataloader.dataset.indices={sizes.clean_images}')
    if teacher_checkpoint is not None:
        options.append(f'default_hooks.teacher.checkpoint={teacher_checkpoint}')
    command = [sys.executable, TRAIN_SCRIPT, osp.join(CONFIG_DIR, stage.config), '--work-dir',
               work_dir, '--cfg-options', *options]
    print(f'\n=== {stage.title}\n$ {" ".join(command)}', flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO_ROOT, env=dict(os.environ, **THREAD_ENV))
    return time.perf_counter() - start


# ----------------------------------------------------------------------------- stage manifests
def config_sha256(config_file: str) -> str:
    """The SHA-256 of a config resolved with its bases (a change to a base changes it too)."""
    return json_sha256(Config.fromfile(config_file).to_dict())


def stage_settings(stage: Stage, sizes: DemoSizes, seed: int,
                   teacher_checkpoint: Optional[str] = None) -> dict:
    """Everything that decides what a stage trains: a finished run is reused only for these."""
    settings = dict(stage=stage.name, seed=seed, train_images=sizes.train_images,
                    epochs=stage_epochs(stage, sizes), val_images=sizes.clean_images,
                    config_sha256=config_sha256(osp.join(CONFIG_DIR, stage.config)))
    if teacher_checkpoint is not None:
        settings['teacher_checkpoint_sha256'] = file_sha256(teacher_checkpoint)
    return settings


def write_manifest(work_dir: str, settings: dict, checkpoint: str) -> dict:
    """Record a finished stage, atomically: a kill leaves the old manifest or the new one."""
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
        ``(manifest, '')`` when the stage's manifest records exactly ``settings`` and its final
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
        return None, (f'its final checkpoint {checkpoint} is missing or changed since the stage '
                      'finished')
    return dict(manifest, checkpoint=checkpoint), ''


def prepare_stages(work_dir: str, data_dir: str, sizes: DemoSizes, seed: int,
                   skip_training: bool = False) -> Tuple[Dict[str, dict], Dict[str, float]]:
    """Reuse or train every stage; return the stages' manifests and the training wall times.

    A stage is reused when it finished with the requested settings (:func:`finished_run`),
    otherwise it is trained from scratch (the log says why) and its manifest written after.

    Raises:
        StageRefused: with ``skip_training``, for the first stage that cannot be reused,
            naming it and what differs.
        StageFailed: when the training of a stage fails.
    """
    manifests: Dict[str, dict] = {}
    timing: Dict[str, float] = {}
    teacher_checkpoint = None
    for stage in STAGES:
        stage_dir = osp.join(work_dir, stage.name)
        student_teacher = teacher_checkpoint if stage.name == 'stage2_student' else None
        settings = stage_settings(stage, sizes, seed, student_teacher)
        manifest, reason = finished_run(stage_dir, settings)
        if manifest is not None:
            print(f'[demo] {stage.name}: finished earlier with the same settings '
                  f'({osp.join(stage_dir, MANIFEST)}): not retrained.', flush=True)
        elif skip_training:
            raise StageRefused(
                f'--skip-training cannot reuse stage {stage.name}: {reason}. Rerun the demo '
                'without --skip-training (it retrains the stages that differ) or use another '
                '--work-dir.')
        else:
            print(f'[demo] {stage.name}: training from scratch: {reason}.', flush=True)
            # Removed first: a run killed from here on leaves no manifest, so it is retrained.
            if osp.isfile(osp.join(stage_dir, MANIFEST)):
                os.remove(osp.join(stage_dir, MANIFEST))
            try:
                timing[stage.name] = train_stage(stage, stage_dir, data_dir, sizes, seed,
                                                 student_teacher)
            except subprocess.CalledProcessError as error:
                raise StageFailed(
                    f'Training of {stage.name} failed (tools/train.py exited with '
                    f'{error.returncode}); its log is in {stage_dir}. Rerunning the same '
                    'command keeps the stages that finished with these settings and trains '
                    'this one again from scratch.') from error
            checkpoint = final_checkpoint(stage, stage_dir, sizes)
            manifest = dict(write_manifest(stage_dir, settings, checkpoint),
                            checkpoint=checkpoint)
        manifests[stage.name] = dict(manifest, trained_now=stage.name in timing)
        if stage.name == 'stage1_token_labeler':
            teacher_checkpoint = manifest['checkpoint']
    return manifests, timing


# ----------------------------------------------------------------------------- evaluation
def load_classifier(config: Config, checkpoint: str) -> torch.nn.Module:
    """Build ``config.model`` with its data preprocessor and load its (EMA) weights, strictly."""
    model = MODELS.build(copy.deepcopy(dict(config.model,
                                            data_preprocessor=config.data_preprocessor)))
    load_checkpoint(model, checkpoint, use_ema=True)
    return model.eval()


def raw_test_dataset(config: Config, data_dir: str):
    """Fashion-MNIST's test set without a pipeline (raw 28x28 grey arrays)."""
    return DATASETS.build(dict(config.test_dataloader.dataset, data_prefix=data_dir,
                               pipeline=[]))


def evaluate_token_labels(student_cfg: Config, teacher_checkpoint: str, sizes: DemoSizes,
                          seed: int) -> dict:
    """Token-label quality of the stage-1 teacher on clean, spatial-only and full views."""
    teacher = load_token_labeler(student_cfg, teacher_checkpoint, hook_teacher=True)
    rng = np.random.default_rng(seed + 1)
    clean_set = build_view_dataset(student_cfg, 'test', 'clean')
    indices = np.sort(rng.choice(len(clean_set), min(sizes.token_label_images, len(clean_set)),
                                 replace=False)).tolist()
    clean = collect_views(teacher, clean_set, indices, ['clean'], seed=seed)
    augmented = collect_views(teacher, build_view_dataset(student_cfg, 'test', 'teacher'),
                              indices, ['teacher', 'student'], seed=seed)
    grid = clean['token_logits']['clean'].shape[-2:]
    clean_foreground = foreground_tokens(foreground_pixels(clean['images']['clean']), grid)
    # Both augmented views share their geometry: the teacher view's mask serves both.
    augmented_foreground = foreground_tokens(foreground_pixels(augmented['images']['teacher']),
                                             grid)
    views = {
        'clean (test pipeline)': (clean['token_logits']['clean'], clean['classes'],
                                  clean_foreground),
        'spatial-only (teacher view)': (augmented['token_logits']['teacher'],
                                        augmented['classes'], augmented_foreground),
        'full augmentation (student view)': (augmented['token_logits']['student'],
                                             augmented['classes'], augmented_foreground),
    }
    results = {}
    for view, (logits, classes, foreground) in views.items():
        batches = [(logits[i:i + 256], classes[i:i + 256], foreground[i:i + 256])
                   for i in range(0, len(classes), 256)]
        results[view] = token_label_quality(batches, gumbel_draws=sizes.gumbel_draws,
                                            seed=seed)
    return dict(images=len(indices), grid=list(grid), gumbel_draws=sizes.gumbel_draws,
                views=results)


# ----------------------------------------------------------------------------- main
def run_demo(work_dir: str = 'work_dirs/demo',
             data_dir: str = DEFAULT_DATA_DIR,
             sizes: DemoSizes = FULL,
             seed: int = 0,
             skip_training: bool = False,
             quick: bool = False,
             command: str = 'python tools/demo.py') -> dict:
    """Run the demo; return the report dict (also written to the work directory).

    Args:
        work_dir: Where the three runs, ``report.md``, ``report.json`` and the figure go.
        data_dir: Fashion-MNIST's IDX files (prepared when missing).
        sizes: How much to train and evaluate (:data:`FULL`, :data:`QUICK` or
            :func:`demo_sizes`).
        seed: Seed of training, test subsets, corruptions and Gumbel draws.
        skip_training: Reuse the stages already in the work directory; refuse (before any
            evaluation) when one of them did not finish with the requested settings.
        quick: Whether ``sizes`` come from ``--quick`` (recorded in the report).
        command: The command line, recorded in the report.

    Raises:
        ValueError: for a seed out of range.
        StageRefused: with ``skip_training``, for a stage that cannot be reused.
        StageFailed: when the training of a stage fails.
    """
    check_seed(seed)
    if not (osp.isfile(TRAIN_SCRIPT) and osp.isdir(CONFIG_DIR)):
        raise FileNotFoundError(
            f'The demo needs the repository checkout the package runs from; {TRAIN_SCRIPT} or '
            f'{CONFIG_DIR} is missing. Install stl_mm from its checkout with `pip install -e .` '
            '(`make install` does).')
    torch.set_num_threads(COMPUTE_THREADS)
    work_dir = osp.abspath(work_dir)
    data_dir = osp.abspath(data_dir)
    os.makedirs(work_dir, exist_ok=True)
    begin = time.perf_counter()

    data_source = prepare_fashion_mnist(data_dir)
    print(f'[demo] Fashion-MNIST: {data_source}', flush=True)
    stages, timing = prepare_stages(work_dir, data_dir, sizes, seed, skip_training)
    checkpoints = {name: stage['checkpoint'] for name, stage in stages.items()}
    teacher_checkpoint = checkpoints['stage1_token_labeler']

    print('\n=== Report: clean and corrupted accuracy, token-label quality, figure', flush=True)
    report_start = time.perf_counter()
    configs = {stage.name: Config.fromfile(osp.join(CONFIG_DIR, stage.config))
               for stage in STAGES}
    model_stages = {'baseline': 'baseline', 'student': 'stage2_student'}
    models = {name: load_classifier(configs[stage], checkpoints[stage])
              for name, stage in model_stages.items()}
    student_cfg = configs['stage2_student']
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        student_cfg[loader]['dataset']['data_prefix'] = data_dir
    test_steps = student_cfg.test_dataloader.dataset.pipeline
    pipeline = Compose([TRANSFORMS.build(step) for step in test_steps])
    # The robustness core's results file: an interrupted report resumes its finished cells;
    # models trained in this run are new, so cells recorded for earlier ones are dropped.
    results_path = osp.join(work_dir, 'fashion_mnist_c.json')
    if any(stage['trained_now'] for stage in stages.values()) and osp.isfile(results_path):
        os.remove(results_path)
    results = fashion_mnist_c_results(
        results_path, {name: checkpoints[stage] for name, stage in model_stages.items()},
        data_dir, seed, sizes.clean_images, sizes.corruption_images)
    robustness = evaluate_robustness(models, pipeline, raw_test_dataset(student_cfg, data_dir),
                                     sizes, seed, results)
    token_labels = evaluate_token_labels(student_cfg, teacher_checkpoint, sizes, seed)
    figure = visualize_token_labels(
        student_cfg, teacher_checkpoint, osp.join(work_dir, 'token_labels.png'), split='test',
        indices=robustness['subset_indices'][:sizes.figure_images], view='clean',
        hook_teacher=True, foreground_threshold=FOREGROUND_PIXEL_THRESHOLD, seed=seed)
    timing['report'] = time.perf_counter() - report_start
    timing['total'] = time.perf_counter() - begin

    arch = student_cfg.model.backbone.arch
    report = dict(
        settings=dict(
            command=command, quick=quick, seed=seed, data_source=data_source,
            arch=', '.join(f'{key}={value}' for key, value in arch.items()),
            parameters=sum(p.numel() for p in models['student'].parameters()),
            cpu_threads=torch.get_num_threads(), machine=f'{platform.machine()}, '
            f'{os.cpu_count()} CPUs visible', **asdict(sizes),
            checkpoints=checkpoints, stages=stages),
        timing_s=timing, robustness=robustness, token_labels=token_labels, figure=figure)
    with open(osp.join(work_dir, 'report.md'), 'w') as file:
        file.write(render_markdown(report))
    write_json(report, osp.join(work_dir, 'report.json'))
    print_tables(report)
    print(f'\n[demo] done in {timing["total"]:.0f} s: {osp.join(work_dir, "report.md")}, '
          f'report.json and {osp.basename(figure)} in {work_dir}', flush=True)
    return report
