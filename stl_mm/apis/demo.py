"""`make demo`: Self-emerging Token Labeling end to end on Fashion-MNIST, on CPU, in minutes.

Trains, through ``tools/train.py`` and mmengine's Runner with the configs in
``configs/stl/demo/``:

1. STL stage 1: a small FAN token labeler (patch 4 on 28x28 inputs, 7x7 tokens);
2. STL stage 2: a student of the same FAN trained with the frozen stage-1 teacher (dual
   views, hard Gumbel-softmax token labels);
3. a baseline of the same FAN without token labels, with the same data and budget;

then writes ``report.md`` and ``report.json`` to the work directory and prints them: clean and
Fashion-MNIST-C top-1 (:mod:`stl_mm.apis.demo_robustness`), the token-label quality of the
teacher against ground-truth foreground masks, and a Fig. 2-style PNG of the teacher's token
labels (:mod:`stl_mm.visualization.token_labels`). The command line is ``tools/demo.py``.

Stage 1 and the baseline train side by side (one compute thread each), the student after
stage 1. Every stage that finishes leaves ``demo_manifest.json`` in its work directory
(:mod:`stl_mm.apis.training_runs`): a rerun reuses a stage that finished with the same
settings and retrains the others from scratch; ``--skip-training`` refuses a stage it cannot
reuse, so one report never mixes runs.
"""
import copy
import os
import os.path as osp
import platform
import time
from dataclasses import asdict, dataclass, replace
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from mmcv.transforms import Compose
from mmengine.config import Config
from mmpretrain.registry import DATASETS, MODELS, TRANSFORMS

from stl_mm.apis.demo_report import STUDY_FILE, noise_statement, print_tables, render_markdown
from stl_mm.apis.demo_robustness import evaluate_robustness
from stl_mm.apis.token_labeler import build_view_dataset, collect_views, load_token_labeler
from stl_mm.apis.training_runs import (COMPUTE_THREADS, TRAIN_SCRIPT, RunFailed, RunRefused,
                                       TrainingRun, execute_runs)
from stl_mm.datasets.fashion_mnist import DEFAULT_DATA_DIR, prepare_fashion_mnist
from stl_mm.evaluation.reports import write_json
from stl_mm.evaluation.robustness.fashion_mnist_c import fashion_mnist_c_results
from stl_mm.evaluation.token_label_quality import (FOREGROUND_PIXEL_THRESHOLD, foreground_pixels,
                                                   foreground_tokens, token_label_quality)
from stl_mm.models.backbones.fan_checkpoint import load_checkpoint
from stl_mm.utils import REPO_ROOT
from stl_mm.visualization import visualize_token_labels

__all__ = ['DemoSizes', 'DemoStageError', 'FULL', 'QUICK', 'STAGES', 'StageFailed', 'StageRefused',
           'check_seed', 'demo_sizes', 'prepare_stages', 'run_demo']

#: The repository checkout the package runs from: the demo needs its configs and train tool.
CONFIG_DIR = osp.join(REPO_ROOT, 'configs', 'stl', 'demo')
FASHION_MNIST_TRAIN_IMAGES = 60_000
#: numpy's seed range (mmengine seeds Python, numpy and torch with the same number).
MAX_SEED = 2**32 - 1


class DemoStageError(RuntimeError):
    """A stage stopped the demo; the message says which and what to do."""


class StageRefused(DemoStageError):
    """An earlier run of a stage cannot be reused with the requested settings."""


class StageFailed(DemoStageError):
    """The training of a stage failed (its child process exited non-zero)."""


@dataclass(frozen=True)
class Stage:
    """One training run of the demo; ``teacher`` names the stage whose checkpoint it learns
    from (stage 2's token labeler)."""
    name: str
    config: str
    title: str
    teacher: Optional[str] = None


STAGES = (
    Stage('stage1_token_labeler', 'fan_demo_token_labeler.py', 'STL stage 1: token labeler'),
    Stage('baseline', 'fan_demo_baseline.py', 'Baseline: same FAN, no token labels'),
    Stage('stage2_student', 'fan_demo_student.py',
          'STL stage 2: student with the frozen stage-1 teacher',
          teacher='stage1_token_labeler'),
)
#: Trainings run side by side when they do not wait for each other (stage 1 and the
#: baseline): each takes one compute thread, so two use the two cores of a small machine.
PARALLEL_TRAININGS = 2


@dataclass(frozen=True)
class DemoSizes:
    """How much the demo trains and evaluates."""
    train_images: int = 22400  # first images of the 60k training set
    epochs: int = 3  # of the student and the baseline (the same budget)
    teacher_epochs: int = 3  # of the stage-1 token labeler, trained once for every student
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
               teacher_epochs: Optional[int] = None,
               full: DemoSizes = FULL) -> DemoSizes:
    """The sizes of a full (or quick) run with the given overrides (None keeps the default).

    Raises:
        ValueError: naming the option when an override is out of range.
    """
    sizes = QUICK if quick else full
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


def subset_options(sizes: DemoSizes) -> Tuple[str, ...]:
    """``--cfg-options`` of every demo training: the training subset, the validation set."""
    options = [f'train_dataloader.dataset.indices={sizes.train_images}']
    if sizes.clean_images is not None:
        options.append(f'val_dataloader.dataset.indices={sizes.clean_images}')
    return tuple(options)


def data_options(data_dir: str) -> Tuple[str, ...]:
    """``--cfg-options`` pointing every dataset of a demo config at ``data_dir``."""
    return tuple(f'{loader}.dataset.data_prefix={data_dir}'
                 for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'))


def stage_runs(work_dir: str, data_dir: str, sizes: DemoSizes, seed: int) -> List[TrainingRun]:
    """The demo's three trainings (see :data:`STAGES`) as runs of one work directory."""
    return [TrainingRun(
        name=stage.name, config=osp.join(CONFIG_DIR, stage.config),
        work_dir=osp.join(work_dir, stage.name), epochs=stage_epochs(stage, sizes),
        options=(f'randomness.seed={seed}', ) + subset_options(sizes),
        data_options=data_options(data_dir),
        settings=dict(stage=stage.name, seed=seed, train_images=sizes.train_images,
                      val_images=sizes.clean_images),
        teacher=stage.teacher, title=stage.title) for stage in STAGES]


def prepare_stages(work_dir: str, data_dir: str, sizes: DemoSizes, seed: int,
                   skip_training: bool = False,
                   jobs: int = PARALLEL_TRAININGS) -> Tuple[Dict[str, dict], Dict[str, float]]:
    """Reuse or train every stage; return the stages' manifests and the training wall times.

    A stage is reused when it finished with the requested settings
    (:func:`~stl_mm.apis.training_runs.finished_run`), otherwise it is trained from scratch
    (the log says why) and its manifest written after; stage 1 and the baseline train side by
    side (``jobs``), the student once its teacher is ready.

    Raises:
        StageRefused: with ``skip_training``, for the first stage that cannot be reused,
            naming it and what differs.
        StageFailed: when the training of a stage fails.
    """
    try:
        return execute_runs(stage_runs(work_dir, data_dir, sizes, seed), jobs, skip_training)
    except RunRefused as error:
        raise StageRefused(
            f'--skip-training cannot reuse stage {error.name}: {error.reason}. Rerun the demo '
            'without --skip-training (it retrains the stages that differ) or use another '
            '--work-dir.') from error
    except RunFailed as error:
        raise StageFailed(
            f'{error} Rerunning the same command keeps the stages that finished with these '
            'settings and trains this one again from scratch.') from error


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


def _quality(logits: torch.Tensor, classes: torch.Tensor, foreground: torch.Tensor,
             sizes: DemoSizes, seed: int) -> dict:
    batches = [(logits[i:i + 256], classes[i:i + 256], foreground[i:i + 256])
               for i in range(0, len(classes), 256)]
    return token_label_quality(batches, gumbel_draws=sizes.gumbel_draws, seed=seed)


def _token_label_indices(dataset, sizes: DemoSizes, seed: int) -> list:
    rng = np.random.default_rng(seed + 1)
    return np.sort(rng.choice(len(dataset), min(sizes.token_label_images, len(dataset)),
                              replace=False)).tolist()


def evaluate_token_labels(student_cfg: Config, teacher_checkpoint: str, sizes: DemoSizes,
                          seed: int) -> dict:
    """Token-label quality of the stage-1 teacher on clean, spatial-only and full views."""
    teacher = load_token_labeler(student_cfg, teacher_checkpoint, hook_teacher=True)
    clean_set = build_view_dataset(student_cfg, 'test', 'clean')
    indices = _token_label_indices(clean_set, sizes, seed)
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
    results = {view: _quality(*inputs, sizes, seed) for view, inputs in views.items()}
    return dict(images=len(indices), grid=list(grid), gumbel_draws=sizes.gumbel_draws,
                views=results)


def view_token_label_quality(cfg: Config, teacher_checkpoint: str, sizes: DemoSizes, seed: int,
                             view: str) -> dict:
    """Token-label quality of the config's teacher on one view of the seeded test subset
    (``'teacher'``: the view the config's DualView gives the teacher)."""
    teacher = load_token_labeler(cfg, teacher_checkpoint, hook_teacher=True)
    dataset = build_view_dataset(cfg, 'test', 'clean' if view == 'clean' else 'teacher')
    views = collect_views(teacher, dataset, _token_label_indices(dataset, sizes, seed), [view],
                          seed=seed)
    logits = views['token_logits'][view]
    foreground = foreground_tokens(foreground_pixels(views['images'][view]), logits.shape[-2:])
    return _quality(logits, views['classes'], foreground, sizes, seed)


# ----------------------------------------------------------------------------- main
def run_demo(work_dir: str = 'work_dirs/demo',
             data_dir: str = DEFAULT_DATA_DIR,
             sizes: DemoSizes = FULL,
             seed: int = 0,
             skip_training: bool = False,
             quick: bool = False,
             command: str = 'python tools/demo.py',
             jobs: int = PARALLEL_TRAININGS) -> dict:
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
        jobs: Trainings side by side (stage 1 and the baseline do not wait for each other).

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
    stages, timing = prepare_stages(work_dir, data_dir, sizes, seed, skip_training, jobs)
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
            patch_size=arch['patch_size'], batch_size=student_cfg.train_dataloader.batch_size,
            parallel_trainings=jobs,
            parameters=sum(p.numel() for p in models['student'].parameters()),
            cpu_threads=torch.get_num_threads(), machine=f'{platform.machine()}, '
            f'{os.cpu_count()} CPUs visible', **asdict(sizes),
            checkpoints=checkpoints, stages=stages),
        timing_s=timing, robustness=robustness, token_labels=token_labels, figure=figure,
        noise=noise_statement(robustness, osp.join(work_dir, 'study', STUDY_FILE)))
    with open(osp.join(work_dir, 'report.md'), 'w') as file:
        file.write(render_markdown(report))
    write_json(report, osp.join(work_dir, 'report.json'))
    print_tables(report)
    print(f'\n[demo] done in {timing["total"]:.0f} s: {osp.join(work_dir, "report.md")}, '
          f'report.json and {osp.basename(figure)} in {work_dir}', flush=True)
    return report
