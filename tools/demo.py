"""`make demo`: Self-emerging Token Labeling end to end on Fashion-MNIST, on CPU, in minutes.

Runs, through tools/train.py and mmengine's Runner with the configs in configs/stl/demo/:

1. STL stage 1: a small FAN token labeler (patch 4 on 32x32 inputs, 8x8 tokens);
2. STL stage 2: a student of the same FAN trained with the frozen stage-1 teacher (dual
   views, hard Gumbel-softmax token labels);
3. a baseline of the same FAN without token labels, with the same data and budget;

then writes ``report.md`` and ``report.json`` to the work directory and prints them:

- clean top-1 of baseline and student;
- top-1 on "Fashion-MNIST-C": the 15 imagecorruptions benchmark corruptions at severities 1-5
  on a fixed seeded subset of the test set, with mean corrupted accuracy and retention
  (corrupted / clean), per corruption and overall;
- the token-label quality of the teacher against ground-truth foreground masks (argmax and
  hard-Gumbel labels; clean, spatial-only and full-augmentation views);
- a Fig. 2-style PNG of the teacher's token labels (tools/visualize_token_labels.py).

Examples:
    python tools/demo.py                       # the full demo (about 9 minutes on 2 idle cores)
    python tools/demo.py --quick               # a half-minute smoke run on tiny subsets
    python tools/demo.py --skip-training       # re-evaluate the checkpoints of an earlier run
"""
import argparse
import copy
import os
import os.path as osp
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

TOOLS_DIR = osp.dirname(osp.abspath(__file__))
REPO_ROOT = osp.dirname(TOOLS_DIR)
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, TOOLS_DIR)

import stl_mm  # noqa: E402,F401  (registers every module)
from mmcv.transforms import Compose  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmpretrain.registry import DATASETS, MODELS, TRANSFORMS  # noqa: E402
from prepare_fashion_mnist import DEFAULT_DATA_DIR, prepare_fashion_mnist  # noqa: E402
from stl_mm.compat.imagecorruptions import BENCHMARK_CORRUPTIONS, SEVERITIES, corrupt  # noqa: E402
from stl_mm.evaluation.metrics.robustness import summarize_robustness  # noqa: E402
from stl_mm.evaluation.reports import markdown_table, text_table, write_json  # noqa: E402
from stl_mm.evaluation.token_label_quality import (  # noqa: E402
    FOREGROUND_PIXEL_THRESHOLD, FOREGROUND_TOKEN_FRACTION, foreground_pixels, foreground_tokens,
    token_label_quality)
from stl_mm.models.backbones.fan_checkpoint import read_checkpoint  # noqa: E402
from visualize_token_labels import (build_view_dataset, collect_views,  # noqa: E402
                                    load_token_labeler, visualize_token_labels)

CONFIG_DIR = osp.join(REPO_ROOT, 'configs', 'stl', 'demo')
# One compute thread per process: the data loader worker takes the second core. On a busy or
# shared machine two OpenMP threads per process are also many times slower than one.
COMPUTE_THREADS = 1
THREAD_ENV = {'OMP_NUM_THREADS': str(COMPUTE_THREADS), 'MKL_NUM_THREADS': str(COMPUTE_THREADS)}
TRAIN_SCRIPT = osp.join(TOOLS_DIR, 'train.py')


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


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/demo',
                        help='where the runs, report.md, report.json and the figure go')
    parser.add_argument('--data-dir', default=DEFAULT_DATA_DIR, help='Fashion-MNIST files')
    parser.add_argument('--quick', action='store_true',
                        help='tiny subsets and two epochs: a smoke run of every step')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of training, test subsets, corruptions and Gumbel draws')
    parser.add_argument('--skip-training', action='store_true',
                        help='reuse the checkpoints already in the work directory')
    parser.add_argument('--train-images', type=int, help='override the training subset size')
    parser.add_argument('--epochs', type=int,
                        help='override the epochs of the student and the baseline')
    parser.add_argument('--teacher-epochs', type=int,
                        help='override the epochs of the stage-1 token labeler')
    return parser.parse_args(argv)


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
    """Build ``config.model`` with its data preprocessor and load (EMA) weights."""
    model_cfg = copy.deepcopy(dict(config.model, data_preprocessor=config.data_preprocessor))
    model = MODELS.build(model_cfg)
    state_dict, _ = read_checkpoint(checkpoint, use_ema=True)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def test_dataset(config: Config, data_dir: str):
    """Fashion-MNIST's test set without a pipeline (raw 28x28 grey arrays)."""
    return DATASETS.build(dict(config.test_dataloader.dataset, data_prefix=data_dir,
                               pipeline=[]))


@torch.no_grad()
def predict(models: Dict[str, torch.nn.Module], pipeline: Compose, images: Sequence[np.ndarray],
            batch_size: int = 500) -> Dict[str, np.ndarray]:
    """Top-1 predictions of each model on raw images passed through ``pipeline``."""
    predictions = {name: [] for name in models}
    for start in range(0, len(images), batch_size):
        packed = [pipeline(dict(img=image)) for image in images[start:start + batch_size]]
        batch = [item['inputs'] for item in packed]
        for name, model in models.items():
            inputs = model.data_preprocessor(dict(inputs=batch), False)['inputs']
            logits = model.head.prediction_logits(model.extract_feat(inputs))
            predictions[name].append(logits.argmax(dim=1).numpy())
    return {name: np.concatenate(values) for name, values in predictions.items()}


def corruption_seed(seed: int, corruption: str, severity: int, index: int) -> int:
    """A fixed seed per (corruption, severity, test image)."""
    return (seed * 1_000_003 + BENCHMARK_CORRUPTIONS.index(corruption) * 100_003 +
            severity * 10_007 + index) % 2**32


def evaluate_robustness(models: Dict[str, torch.nn.Module], pipeline: Compose, dataset,
                        sizes: DemoSizes, seed: int) -> dict:
    """Clean and Fashion-MNIST-C top-1 of each model."""
    rng = np.random.default_rng(seed)
    all_indices = np.arange(len(dataset))
    if sizes.clean_images is not None:
        all_indices = np.sort(rng.choice(len(dataset), sizes.clean_images, replace=False))
    subset = np.sort(rng.choice(all_indices, min(sizes.corruption_images, len(all_indices)),
                                replace=False))
    infos = [dataset.get_data_info(int(index)) for index in all_indices]
    labels = np.array([int(info['gt_label']) for info in infos])
    clean_predictions = predict(models, pipeline, [info['img'] for info in infos])
    in_subset = np.isin(all_indices, subset)
    subset_images = [info['img'] for info, chosen in zip(infos, in_subset) if chosen]
    subset_labels = labels[in_subset]

    results = {name: dict(clean_top1=100 * float(np.mean(clean_predictions[name] == labels)),
                          clean_top1_subset=100 * float(
                              np.mean(clean_predictions[name][in_subset] == subset_labels)),
                          cells={}) for name in models}
    start = time.perf_counter()
    for corruption in BENCHMARK_CORRUPTIONS:
        for severity in SEVERITIES:
            corrupted = [corrupt(image, corruption, severity,
                                 corruption_seed(seed, corruption, severity, int(index)))
                         for image, index in zip(subset_images, subset)]
            predictions = predict(models, pipeline, corrupted)
            for name in models:
                results[name]['cells'][(corruption, severity)] = 100 * float(
                    np.mean(predictions[name] == subset_labels))
        print(f'[demo] Fashion-MNIST-C: {corruption} done '
              f'({time.perf_counter() - start:.0f} s)', flush=True)
    for name in models:
        results[name].update(
            summarize_corruptions(results[name]['cells'], results[name]['clean_top1_subset']))
    return dict(test_images=len(all_indices), subset_size=len(subset),
                subset_indices=subset.tolist(), models=results)


def summarize_corruptions(cells: Dict[tuple, float], clean_top1: float) -> dict:
    """Per-corruption, per-severity and overall corrupted top-1 and retention.

    Args:
        cells: Top-1 (%) by ``(corruption, severity)`` for the 15 benchmark corruptions.
        clean_top1: Clean top-1 (%) on the same images.

    Returns:
        ``per_corruption[c] = dict(top1, retention)`` (means over severities),
        ``per_severity[s]`` (mean over corruptions), ``mean_corrupted_top1``, ``retention``
        (mean corrupted / clean, %) and ``cells`` keyed ``'<corruption>/<severity>'``.
    """
    # Retention is undefined (NaN) for a model that gets no clean image right.
    summary = summarize_robustness(cells, clean_top1 if clean_top1 > 0 else None)
    return dict(
        per_corruption={corruption: dict(top1=summary[f'top1/{corruption}'],
                                         retention=_retention(summary[f'top1/{corruption}'],
                                                              clean_top1))
                        for corruption in BENCHMARK_CORRUPTIONS},
        per_severity={severity: float(np.mean([cells[(corruption, severity)]
                                               for corruption in BENCHMARK_CORRUPTIONS]))
                      for severity in SEVERITIES},
        mean_corrupted_top1=summary['mCA'],
        retention=summary.get('retention', float('nan')),
        cells={f'{corruption}/{severity}': value
               for (corruption, severity), value in cells.items()})


def _retention(corrupted: float, clean: float) -> float:
    return 100 * corrupted / clean if clean > 0 else float('nan')


def evaluate_token_labels(student_cfg: Config, teacher_checkpoint: str, data_dir: str,
                          sizes: DemoSizes, seed: int) -> dict:
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


# ----------------------------------------------------------------------------- report
def report_tables(report: dict) -> List[tuple]:
    """(title, header, rows) of every table of the report."""
    robustness = report['robustness']
    models = robustness['models']
    names = list(models)
    tables = []
    rows = [[name, models[name]['clean_top1'], models[name]['clean_top1_subset'],
             models[name]['mean_corrupted_top1'], models[name]['retention']] for name in names]
    tables.append((
        'Clean and corrupted top-1 (%)',
        ['model', f'clean top-1 ({robustness["test_images"]} test images)',
         f'clean top-1 (subset of {robustness["subset_size"]})',
         'mean corrupted top-1 (15 x 5)', 'retention'], rows))
    rows = []
    for corruption in BENCHMARK_CORRUPTIONS:
        row = [corruption]
        for name in names:
            cell = models[name]['per_corruption'][corruption]
            row += [cell['top1'], cell['retention']]
        rows.append(row)
    rows.append(['**mean**'] + [value for name in names for value in (
        models[name]['mean_corrupted_top1'], models[name]['retention'])])
    header = ['corruption'] + [f'{name} {what}' for name in names
                               for what in ('top-1', 'retention')]
    tables.append((f'Fashion-MNIST-C per corruption (mean over severities 1-5, '
                   f'{robustness["subset_size"]} test images), %', header, rows))
    rows = [[str(severity)] + [models[name]['per_severity'][severity] for name in names]
            for severity in SEVERITIES]
    tables.append(('Fashion-MNIST-C per severity (mean over the 15 corruptions), top-1 %',
                   ['severity'] + names, rows))
    quality = report['token_labels']
    rows = []
    for view, modes in quality['views'].items():
        for mode, metrics in modes.items():
            label = mode if mode == 'argmax' else f'hard Gumbel (mean of {quality["gumbel_draws"]})'
            rows.append([view, label] + [100 * metrics[key] for key in (
                'precision', 'recall', 'iou')] + [metrics['confidence_correct'],
                                                  metrics['confidence_wrong']])
    tables.append((
        f'Token-label quality of the stage-1 teacher ({quality["images"]} test images, '
        f'{quality["grid"][0]}x{quality["grid"][1]} tokens), "token labelled as the image\'s '
        'class" vs ground-truth foreground tokens',
        ['view', 'labels', 'precision %', 'recall %', 'IoU %', 'conf. correct fg',
         'conf. wrong fg'], rows))
    return tables


def render_markdown(report: dict) -> str:
    settings = report['settings']
    timing = report['timing_s']
    lines = [
        '# STL demo on Fashion-MNIST', '',
        f'Command: `{settings["command"]}` (seed {settings["seed"]}'
        f'{", --quick" if settings["quick"] else ""}). Data: {settings["data_source"]}.', '',
        f'- Training: the first {settings["train_images"]} of the 60,000 training images, '
        f'{settings["teacher_epochs"]} epochs for the stage-1 token labeler (trained once, '
        f'reused by every student), {settings["epochs"]} for the student and for the baseline '
        f'(the same budget); batch 128, on {settings["cpu_threads"]} CPU '
        f'thread(s) per process plus one data-loading worker ({settings["machine"]}).',
        f'- Model: FAN-ViT `{settings["arch"]}` ({settings["parameters"]:,} parameters), '
        '32x32 inputs, 8x8 tokens.',
        '- Wall time: ' + ', '.join(f'{name} {seconds:.0f} s' for name, seconds in timing.items())
        + '.', '',
    ]
    for title, header, rows in report_tables(report):
        lines += [f'## {title}', '', markdown_table(header, rows), '']
    lines += [
        '## Token labels of the teacher (Fig. 2 style)', '',
        f'![token labels]({osp.basename(report["figure"])})', '',
        'Columns: image; tokens labelled as the image\'s class (argmax); the same split into '
        'confident (yellow, p >= 0.5) and unconfident (green) labels; the tokens one hard '
        'Gumbel-softmax draw labels as the class; the histogram of the teacher\'s confidence in '
        'the labels of foreground tokens, correct (labelled as the class) vs wrong. The white '
        'outline is the ground-truth foreground.', '',
        '## Definitions', '',
        f'- Foreground: a pixel is foreground when its value exceeds '
        f'{FOREGROUND_PIXEL_THRESHOLD:g} (of 255) after resizing to 32x32; a token (4x4 pixels) '
        f'is foreground when more than {FOREGROUND_TOKEN_FRACTION:.0%} of its pixels are. In '
        'the augmented views, the mask is taken from the teacher view, which shares the '
        'student view\'s geometry (crop, flip, rotate/shear/translate).',
        '- Precision: foreground tokens labelled as the image\'s class / tokens labelled as the '
        'class; recall: / foreground tokens; IoU: / union of both sets. Confidence: the '
        'teacher\'s softmax probability of the label a foreground token received, averaged over '
        'correct (the image\'s class) and wrong labels. All pooled over the images.',
        '- Fashion-MNIST-C: each 28x28 test image of the subset corrupted with '
        '`stl_mm.compat.imagecorruptions.corrupt` (seeded per image, corruption and severity), '
        'then the test pipeline. Retention = corrupted top-1 / clean top-1 on the same subset. '
        'ImageNet-C\'s mCE is not reported: its AlexNet normalisation has no meaning here.',
    ]
    return '\n'.join(lines) + '\n'


def print_tables(report: dict) -> None:
    for title, header, rows in report_tables(report):
        print(f'\n{title}\n{text_table(header, rows)}')


# ----------------------------------------------------------------------------- main
def run_demo(argv: Optional[List[str]] = None) -> dict:
    """Run the demo; return the report dict (also written to the work directory)."""
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.train_images is not None:
        sizes = replace(sizes, train_images=args.train_images)
    for option, field in (('--epochs', 'epochs'), ('--teacher-epochs', 'teacher_epochs')):
        value = getattr(args, field)
        if value is None:
            continue
        if value < 2:
            raise SystemExit(f'{option} must be at least 2: the schedule warms up for one epoch '
                             'and then decays.')
        sizes = replace(sizes, **{field: value})
    torch.set_num_threads(COMPUTE_THREADS)
    work_dir = osp.abspath(args.work_dir)
    data_dir = osp.abspath(args.data_dir)
    os.makedirs(work_dir, exist_ok=True)
    begin = time.perf_counter()

    data_source = prepare_fashion_mnist(data_dir)
    print(f'[demo] Fashion-MNIST: {data_source}', flush=True)
    timing: Dict[str, float] = {}
    stage_dirs = {stage.name: osp.join(work_dir, stage.name) for stage in STAGES}
    teacher_checkpoint = None
    for stage in STAGES:
        if not args.skip_training:
            timing[stage.name] = train_stage(
                stage, stage_dirs[stage.name], data_dir, sizes, args.seed,
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
    robustness = evaluate_robustness(models, pipeline, test_dataset(student_cfg, data_dir),
                                     sizes, args.seed)
    token_labels = evaluate_token_labels(student_cfg, teacher_checkpoint, data_dir, sizes,
                                         args.seed)
    figure = visualize_token_labels(
        student_cfg, teacher_checkpoint, osp.join(work_dir, 'token_labels.png'), split='test',
        indices=robustness['subset_indices'][:sizes.figure_images], view='clean',
        hook_teacher=True, foreground_threshold=FOREGROUND_PIXEL_THRESHOLD, seed=args.seed)
    timing['report'] = time.perf_counter() - report_start
    timing['total'] = time.perf_counter() - begin

    arch = student_cfg.model.backbone.arch
    report = dict(
        settings=dict(
            command='python tools/demo.py' + (' ' + ' '.join(argv) if argv else ' '.join(
                [''] + sys.argv[1:])).rstrip(),
            quick=args.quick, seed=args.seed, data_source=data_source,
            arch=', '.join(f'{key}={value}' for key, value in arch.items()),
            parameters=sum(p.numel() for p in models['student'].parameters()),
            cpu_threads=torch.get_num_threads(), machine=f'{platform.machine()}, '
            f'{os.cpu_count()} CPUs visible', **asdict(sizes),
            checkpoints={name: last_checkpoint(path) for name, path in stage_dirs.items()}),
        timing_s=timing, robustness=robustness, token_labels=token_labels, figure=figure)
    markdown = render_markdown(report)
    with open(osp.join(work_dir, 'report.md'), 'w') as file:
        file.write(markdown)
    write_json(report, osp.join(work_dir, 'report.json'))
    print_tables(report)
    print(f'\n[demo] done in {timing["total"]:.0f} s: {osp.join(work_dir, "report.md")}, '
          f'report.json and {osp.basename(figure)} in {work_dir}', flush=True)
    return report


if __name__ == '__main__':
    run_demo()
