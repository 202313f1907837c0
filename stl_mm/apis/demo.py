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
"""
import copy
import os
import os.path as osp
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Dict, Optional

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
from stl_mm.evaluation.token_label_quality import (FOREGROUND_PIXEL_THRESHOLD, foreground_pixels,
                                                   foreground_tokens, token_label_quality)
from stl_mm.models.backbones.fan_checkpoint import load_checkpoint
from stl_mm.visualization import visualize_token_labels

__all__ = ['DemoSizes', 'FULL', 'QUICK', 'STAGES', 'demo_sizes', 'run_demo']

#: The repository checkout the package runs from: the demo needs its configs and train tool.
REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG_DIR = osp.join(REPO_ROOT, 'configs', 'stl', 'demo')
TRAIN_SCRIPT = osp.join(REPO_ROOT, 'tools', 'train.py')
# One compute thread per process: the data loader worker takes the second core. On a busy or
# shared machine two OpenMP threads per process are also many times slower than one.
COMPUTE_THREADS = 1
THREAD_ENV = {'OMP_NUM_THREADS': str(COMPUTE_THREADS), 'MKL_NUM_THREADS': str(COMPUTE_THREADS)}


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
        if train_images < 1:
            raise ValueError(f'--train-images must be at least 1, got {train_images}.')
        sizes = replace(sizes, train_images=train_images)
    for option, field, value in (('--epochs', 'epochs', epochs),
                                 ('--teacher-epochs', 'teacher_epochs', teacher_epochs)):
        if value is None:
            continue
        if value < 2:
            raise ValueError(f'{option} must be at least 2: the schedule warms up for one epoch '
                             'and then decays.')
        sizes = replace(sizes, **{field: value})
    return sizes


# ----------------------------------------------------------------------------- training
def last_checkpoint(work_dir: str) -> str:
    """The checkpoint mmengine's CheckpointHook saved last in ``work_dir``."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        raise FileNotFoundError(f'No checkpoint in {work_dir}: run the demo without '
                                '--skip-training first.')
    with open(pointer) as file:
        return file.read().strip()


def train_stage(stage: Stage, work_dir: str, data_dir: str, sizes: DemoSizes, seed: int,
                teacher_checkpoint: Optional[str] = None) -> float:
    """Train one stage with tools/train.py in a child process; return its wall time."""
    epochs = sizes.teacher_epochs if stage.name == 'stage1_token_labeler' else sizes.epochs
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
        skip_training: Reuse the checkpoints already in the work directory.
        quick: Whether ``sizes`` come from ``--quick`` (recorded in the report).
        command: The command line, recorded in the report.
    """
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
    timing: Dict[str, float] = {}
    stage_dirs = {stage.name: osp.join(work_dir, stage.name) for stage in STAGES}
    teacher_checkpoint = None
    for stage in STAGES:
        if not skip_training:
            timing[stage.name] = train_stage(
                stage, stage_dirs[stage.name], data_dir, sizes, seed,
                teacher_checkpoint if stage.name == 'stage2_student' else None)
        if stage.name == 'stage1_token_labeler':
            teacher_checkpoint = last_checkpoint(stage_dirs[stage.name])

    print('\n=== Report: clean and corrupted accuracy, token-label quality, figure', flush=True)
    report_start = time.perf_counter()
    configs = {stage.name: Config.fromfile(osp.join(CONFIG_DIR, stage.config))
               for stage in STAGES}
    models = {
        'baseline': load_classifier(configs['baseline'],
                                    last_checkpoint(stage_dirs['baseline'])),
        'student': load_classifier(configs['stage2_student'],
                                   last_checkpoint(stage_dirs['stage2_student'])),
    }
    student_cfg = configs['stage2_student']
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        student_cfg[loader]['dataset']['data_prefix'] = data_dir
    test_steps = student_cfg.test_dataloader.dataset.pipeline
    pipeline = Compose([TRANSFORMS.build(step) for step in test_steps])
    robustness = evaluate_robustness(models, pipeline, raw_test_dataset(student_cfg, data_dir),
                                     sizes, seed)
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
            checkpoints={name: last_checkpoint(path) for name, path in stage_dirs.items()}),
        timing_s=timing, robustness=robustness, token_labels=token_labels, figure=figure)
    with open(osp.join(work_dir, 'report.md'), 'w') as file:
        file.write(render_markdown(report))
    write_json(report, osp.join(work_dir, 'report.json'))
    print_tables(report)
    print(f'\n[demo] done in {timing["total"]:.0f} s: {osp.join(work_dir, "report.md")}, '
          f'report.json and {osp.basename(figure)} in {work_dir}', flush=True)
    return report
