"""The demo's seeds-and-ablations study (``python tools/demo.py --study``).

Each arm is the Fashion-MNIST analogue of one comparison of the STL paper, trained with
several seeds at the study's budget (:data:`STUDY`) through the same configs, training runs
(:mod:`stl_mm.apis.training_runs`) and evaluation as the demo:

==================  ==========================================  ====================
arm                 what changes against the default student    paper
==================  ==========================================  ====================
baseline            no token labels (``fan_demo_baseline.py``)  FAN vs STL
stl                 none: hard Gumbel labels, beta = 1          FAN vs STL
argmax / softmax    the teacher's argmax / full distribution    Table 7
full_aug_teacher    the teacher sees the student's full view    Table 1
small_teacher       a width-32 token labeler as teacher         Table 8
token_weight_0.5/2  beta = 0.5 / 2                              Table 10
aligned_mix         token labels mixed with the batch's         ours (no paper claim)
                    Mixup / CutMix
==================  ==========================================  ====================

For every arm and seed: clean top-1 on the 10,000 test images, mean Fashion-MNIST-C top-1
(15 corruptions x 5 severities on a seeded subset) and retention, and the token-label quality
(IoU with the ground-truth foreground) of the labels its teacher gives on the view it sees.
The summary gives mean and standard deviation over seeds, and for each arm the difference to
its reference arm with a verdict: within noise when it is smaller than twice its standard
error, otherwise with or against the paper's direction.

Everything resumes: a finished training is reused (its manifest), finished Fashion-MNIST-C
cells are kept (the robustness core's results file), and a seed's evaluation is recomputed
only when one of its checkpoints changed. ``--jobs`` trainings run side by side.
"""
import json
import math
import os
import os.path as osp
import platform
import time
from dataclasses import asdict, dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmcv.transforms import Compose
from mmengine.config import Config, DictAction
from mmpretrain.registry import TRANSFORMS

from stl_mm.apis.demo import (CONFIG_DIR, QUICK, DemoSizes, StageFailed, StageRefused,
                              data_options, demo_sizes, load_classifier, raw_test_dataset,
                              subset_options,
                              view_token_label_quality)
from stl_mm.apis.demo_report import NOISE_SIGMAS, STUDY_FILE
from stl_mm.apis.demo_robustness import evaluate_robustness
from stl_mm.apis.training_runs import (COMPUTE_THREADS, RunFailed, RunRefused, TrainingRun,
                                       execute_runs)
from stl_mm.datasets.fashion_mnist import prepare_fashion_mnist
from stl_mm.evaluation.reports import Table, render_tables, write_json, write_text
from stl_mm.evaluation.robustness.fashion_mnist_c import fashion_mnist_c_results
from stl_mm.utils import file_sha256

__all__ = ['Arm', 'ARMS', 'STUDY', 'QUICK_STUDY', 'run_study', 'summarize_study',
           'compare_arms', 'study_tables']

SPATIAL_VIEW = 'teacher'


@dataclass(frozen=True)
class Arm:
    """One arm of the study.

    Attributes:
        name: Its key.
        title: What it is, for the tables.
        paper: The comparison of the paper it is the analogue of.
        config: The demo config it trains (in ``configs/stl/demo``).
        options: ``--cfg-options`` on top of that config.
        teacher: The token labeler it learns from (a key of :data:`TEACHERS`), or None.
        label_mode: Which labels the token-label quality is measured for (``'gumbel'`` or
            ``'argmax'``; soft labels are scored by their argmax).
        reference: The arm it is compared with.
        expected: The paper's direction against the reference: ``'higher'``, ``'lower'`` or
            None (no claim).
        claim: The paper's claim, in words.
    """
    name: str
    title: str
    paper: str
    config: str
    options: Tuple[str, ...] = ()
    teacher: Optional[str] = 'labeler'
    label_mode: str = 'gumbel'
    reference: Optional[str] = 'stl'
    expected: Optional[str] = 'lower'
    claim: str = ''


STUDENT = 'fan_demo_student.py'
#: The stage-1 token labelers the arms learn from: config and options.
TEACHERS = {
    'labeler': ('fan_demo_token_labeler.py', ()),
    'small_labeler': ('fan_demo_token_labeler.py', ('model.backbone.arch.embed_dims=32', )),
}
ARMS = (
    Arm('baseline', 'baseline (no token labels)', 'FAN vs STL', 'fan_demo_baseline.py',
        teacher=None, reference=None, expected=None),
    Arm('stl', 'STL: hard Gumbel labels, beta=1', 'FAN vs STL', STUDENT, reference='baseline',
        expected='higher', claim='STL beats FAN (clean and robustness)'),
    Arm('argmax', 'argmax labels', 'Table 7', STUDENT, ('model.token_loss.mode=argmax', ),
        label_mode='argmax', claim='hard Gumbel labels beat argmax labels'),
    Arm('softmax', 'soft (softmax) labels', 'Table 7', STUDENT,
        ('model.token_loss.mode=softmax', ), label_mode='argmax',
        claim='hard Gumbel labels beat soft labels'),
    Arm('full_aug_teacher', 'teacher on the full-augmentation view', 'Table 1',
        'fan_demo_student_full_aug_teacher.py',
        claim='the spatial-only teacher view beats the full-augmentation view'),
    Arm('small_teacher', 'teacher of another size (width 32)', 'Table 8', STUDENT,
        ('default_hooks.teacher.model.backbone.arch.embed_dims=32', ), teacher='small_labeler',
        reference='baseline', expected='higher',
        claim='a token labeler of another size still improves the student'),
    Arm('token_weight_0.5', 'token-loss weight beta=0.5', 'Table 10', STUDENT,
        ('model.token_loss.loss_weight=0.5', ), claim='beta=1 (the paper\'s choice) is best'),
    Arm('token_weight_2', 'token-loss weight beta=2', 'Table 10', STUDENT,
        ('model.token_loss.loss_weight=2.0', ), claim='beta=1 (the paper\'s choice) is best'),
    Arm('aligned_mix', 'token labels mixed like the images (ours)', 'ours', STUDENT,
        ('model.token_loss.token_label_mix=aligned', ), expected=None,
        claim='none (our extension)'),
)
ARM_NAMES = tuple(arm.name for arm in ARMS)
#: The study's budget: about an hour for 9 arms x 3 seeds on two cores.
STUDY = DemoSizes(train_images=12800, epochs=3, teacher_epochs=3, corruption_images=200,
                  token_label_images=500, gumbel_draws=3, figure_images=0)
QUICK_STUDY = replace(QUICK, corruption_images=8, token_label_images=32)
DEFAULT_SEEDS = (0, 1, 2)
METRICS = (('clean_top1', 'clean top-1'), ('mean_corrupted_top1', 'FM-C top-1'),
           ('retention', 'retention'), ('token_label_iou', 'token-label IoU'))


def study_sizes(quick: bool = False, train_images: Optional[int] = None,
                epochs: Optional[int] = None, teacher_epochs: Optional[int] = None) -> DemoSizes:
    """The study's sizes (:data:`STUDY`, or :data:`QUICK_STUDY` with ``quick``) with the
    demo's overrides."""
    sizes = demo_sizes(False, train_images, epochs, teacher_epochs,
                       full=QUICK_STUDY if quick else STUDY)
    return sizes


def read_json(path: str) -> dict:
    with open(path) as file:
        return json.load(file)


def _parse_options(options: Sequence[str]) -> dict:
    return {key: DictAction._parse_iterable(value)
            for key, _, value in (option.partition('=') for option in options)}


def arm_config(arm: Arm, data_dir: str) -> Config:
    """The arm's resolved config with its options and the data directory."""
    cfg = Config.fromfile(osp.join(CONFIG_DIR, arm.config))
    cfg.merge_from_dict(_parse_options(arm.options))
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader]['dataset']['data_prefix'] = data_dir
    return cfg


def study_runs(work_dir: str, data_dir: str, sizes: DemoSizes, seeds: Sequence[int],
               arms: Sequence[Arm]) -> List[TrainingRun]:
    """Every training of the study: the teachers the arms need, then the arms, seed-major."""
    runs = []
    for seed in seeds:
        common = (f'randomness.seed={seed}', ) + subset_options(sizes)
        settings = dict(seed=seed, train_images=sizes.train_images,
                        val_images=sizes.clean_images)
        for teacher in sorted({arm.teacher for arm in arms if arm.teacher}):
            config, options = TEACHERS[teacher]
            runs.append(TrainingRun(
                f'seed{seed}/{teacher}', osp.join(CONFIG_DIR, config),
                osp.join(work_dir, f'seed{seed}', teacher), sizes.teacher_epochs,
                common + options, data_options(data_dir), dict(settings, run=teacher),
                title=f'study: {teacher}, seed {seed}'))
        for arm in arms:
            runs.append(TrainingRun(
                f'seed{seed}/{arm.name}', osp.join(CONFIG_DIR, arm.config),
                osp.join(work_dir, f'seed{seed}', arm.name), sizes.epochs,
                common + arm.options, data_options(data_dir), dict(settings, run=arm.name),
                teacher=f'seed{seed}/{arm.teacher}' if arm.teacher else None,
                title=f'study: {arm.name}, seed {seed}'))
    return runs


def evaluate_seed(work_dir: str, data_dir: str, sizes: DemoSizes, seed: int,
                  arms: Sequence[Arm], manifests: Dict[str, dict]) -> Dict[str, dict]:
    """Clean and Fashion-MNIST-C top-1, retention and token-label quality of every arm of one
    seed; reused from ``seed<k>/evaluation.json`` when its checkpoints are unchanged."""
    seed_dir = osp.join(work_dir, f'seed{seed}')
    checkpoints = {arm.name: manifests[f'seed{seed}/{arm.name}']['checkpoint'] for arm in arms}
    teachers = {arm.name: manifests[f'seed{seed}/{arm.teacher}']['checkpoint']
                for arm in arms if arm.teacher}
    inputs = dict(seed=seed, sizes=asdict(sizes), arms=[arm.name for arm in arms],
                  checkpoint_sha256={name: file_sha256(path) for name, path in
                                     {**checkpoints, **{f'teacher of {k}': v for k, v in
                                                        teachers.items()}}.items()})
    cache = osp.join(seed_dir, 'evaluation.json')
    if osp.isfile(cache):
        recorded = read_json(cache)
        if recorded.get('inputs') == inputs:
            print(f'[study] seed {seed}: evaluation of these checkpoints reused ({cache}).',
                  flush=True)
            return recorded['arms']
    print(f'[study] seed {seed}: evaluating {len(arms)} arms.', flush=True)
    configs = {arm.name: arm_config(arm, data_dir) for arm in arms}
    models = {arm.name: load_classifier(configs[arm.name], checkpoints[arm.name])
              for arm in arms}
    reference_cfg = configs[arms[0].name]
    pipeline = Compose([TRANSFORMS.build(step)
                        for step in reference_cfg.test_dataloader.dataset.pipeline])
    # Cells of other checkpoints are dropped with the file (the core refuses mixed inputs).
    results_path = osp.join(seed_dir, 'fashion_mnist_c.json')
    if osp.isfile(results_path) and read_json(results_path).get('inputs', {}).get(
            'checkpoint_sha256') != {name: inputs['checkpoint_sha256'][name]
                                     for name in checkpoints}:
        os.remove(results_path)
    results = fashion_mnist_c_results(results_path, checkpoints, data_dir, seed,
                                      sizes.clean_images, sizes.corruption_images)
    robustness = evaluate_robustness(models, pipeline, raw_test_dataset(reference_cfg, data_dir),
                                     sizes, seed, results)
    evaluated = {}
    for arm in arms:
        figures = robustness['models'][arm.name]
        entry = dict(clean_top1=figures['clean_top1'],
                     mean_corrupted_top1=figures['mean_corrupted_top1'],
                     retention=figures['retention'])
        if arm.teacher:
            quality = view_token_label_quality(configs[arm.name], teachers[arm.name], sizes,
                                               seed, SPATIAL_VIEW)
            entry['token_label_iou'] = 100 * quality[arm.label_mode]['iou']
            entry['token_label_precision'] = 100 * quality[arm.label_mode]['precision']
        evaluated[arm.name] = entry
    write_json(dict(inputs=inputs, arms=evaluated), cache)
    return evaluated


def _mean_std(values: Sequence[float]) -> Tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    std = float(values.std(ddof=1)) if len(values) > 1 else float('nan')
    return float(values.mean()), std


def summarize_study(per_seed: Dict[int, Dict[str, dict]], arms: Sequence[Arm]) -> dict:
    """Mean, standard deviation and the per-seed values of every metric of every arm."""
    summary = {}
    for arm in arms:
        entry = {}
        for metric, _ in METRICS:
            # Retention is undefined (None, NaN) for a model with no correct clean image.
            values = [float(per_seed[seed][arm.name][metric]) for seed in sorted(per_seed)
                      if per_seed[seed][arm.name].get(metric) is not None
                      and math.isfinite(per_seed[seed][arm.name][metric])]
            if values:
                mean, std = _mean_std(values)
                entry[metric] = dict(mean=mean, std=std, values=values)
        summary[arm.name] = entry
    return summary


def verdict(difference: float, standard_error: float, expected: Optional[str]) -> str:
    """``'within noise'``, or the direction of the difference against the paper's."""
    if not math.isfinite(standard_error) or abs(difference) <= NOISE_SIGMAS * standard_error:
        return 'within noise'
    direction = 'higher' if difference > 0 else 'lower'
    if expected is None:
        return f'{direction} (no paper claim)'
    return f'{direction}: agrees with the paper' if direction == expected else \
        f'{direction}: against the paper'


def compare_arms(summary: dict, arms: Sequence[Arm],
                 metrics: Sequence[str] = ('clean_top1', 'mean_corrupted_top1')) -> dict:
    """Each arm against its reference: difference of the means, its standard error
    (sqrt(s1^2/n1 + s2^2/n2)) and the verdict, per metric."""
    comparisons = {}
    for arm in arms:
        if arm.reference is None or arm.reference not in summary:
            continue
        entry = {}
        for metric in metrics:
            mine, theirs = summary[arm.name].get(metric), summary[arm.reference].get(metric)
            if not mine or not theirs:
                continue
            difference = mine['mean'] - theirs['mean']
            error = math.sqrt(mine['std']**2 / len(mine['values'])
                              + theirs['std']**2 / len(theirs['values']))
            entry[metric] = dict(difference=difference, standard_error=error,
                                 verdict=verdict(difference, error, arm.expected))
        comparisons[arm.name] = dict(reference=arm.reference, metrics=entry)
    return comparisons


def _mean_pm_std(entry: Optional[dict], seeds: int) -> str:
    if not entry:
        return '-'
    text = f'{entry["mean"]:.2f}'
    if math.isfinite(entry['std']):
        text += f' ± {entry["std"]:.2f}'
    if len(entry['values']) < seeds:
        text += f' ({len(entry["values"])} of {seeds} seeds)'
    return text


def study_tables(study: dict) -> List[Table]:
    """The results table (mean ± std over seeds) and the comparison table."""
    arms = [arm for arm in ARMS if arm.name in study['summary']]
    seeds = study['settings']['seeds']
    rows = [[arm.name, arm.paper] + [_mean_pm_std(study['summary'][arm.name].get(metric),
                                                  len(seeds)) for metric, _ in METRICS]
            for arm in arms]
    seed_list = ', '.join(map(str, seeds))
    tables = [Table(f'Study: mean ± standard deviation over {len(seeds)} seeds ({seed_list})',
                    ['arm', 'paper'] + [f'{title} %' for _, title in METRICS], rows)]
    rows = []
    for arm in arms:
        comparison = study['comparisons'].get(arm.name)
        if comparison is None:
            continue
        cells = []
        for metric in ('clean_top1', 'mean_corrupted_top1'):
            found = comparison['metrics'].get(metric)
            cells += ['-', '-'] if found is None else [
                f'{found["difference"]:+.2f} ± {found["standard_error"]:.2f}', found['verdict']]
        rows.append([arm.name, comparison['reference'], arm.claim] + cells)
    tables.append(Table(
        f'Against the reference arm: difference of the means ± its standard error; within '
        f'noise below {NOISE_SIGMAS:g} standard errors',
        ['arm', 'reference', 'paper\'s claim', 'Δ clean top-1', 'clean verdict',
         'Δ FM-C top-1', 'FM-C verdict'], rows))
    return tables


def render_study_markdown(study: dict) -> str:
    settings = study['settings']
    lines = [
        '# STL demo study on Fashion-MNIST: seeds and ablations', '',
        f'Command: `{settings["command"]}`. Seeds {settings["seeds"]}; per run the first '
        f'{settings["train_images"]} training images, {settings["epochs"]} epochs (teachers '
        f'{settings["teacher_epochs"]}); clean top-1 on '
        f'{settings["clean_images"] or "all 10,000"} test images, Fashion-MNIST-C on '
        f'{settings["corruption_images"]} of them x 15 corruptions x 5 severities, token-label '
        f'IoU with the foreground on {settings["token_label_images"]} augmented test images '
        f'(the view each arm\'s teacher sees; Gumbel labels averaged over '
        f'{settings["gumbel_draws"]} draws, argmax for the argmax and softmax arms). '
        f'{settings["jobs"]} trainings side by side, {settings["machine"]}; wall time '
        f'{study["timing_s"]["total"]:.0f} s.', '',
        render_tables(study_tables(study)).rstrip('\n'), '',
        f'![study]({osp.basename(study["figure"])})', '']
    return '\n'.join(lines) + '\n'


def plot_study(study: dict, path: str) -> str:
    """Bars (mean) with error bars (standard deviation) per arm: clean and FM-C top-1."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    arms = [arm.name for arm in ARMS if arm.name in study['summary']]
    panels = [(metric, title) for metric, title in METRICS[:2]]
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
    for axis, (metric, title) in zip(np.atleast_1d(axes), panels):
        entries = [study['summary'][arm].get(metric) for arm in arms]
        means = [entry['mean'] for entry in entries]
        stds = [entry['std'] if math.isfinite(entry['std']) else 0 for entry in entries]
        axis.bar(range(len(arms)), means, yerr=stds, capsize=4,
                 color=['0.6' if arm == 'baseline' else 'C0' for arm in arms])
        for index, entry in enumerate(entries):
            axis.plot([index] * len(entry['values']), entry['values'], 'k.', markersize=4)
        low = min(min(entry['values']) for entry in entries)
        high = max(max(entry['values']) for entry in entries)
        axis.set_ylim(low - 0.2 * (high - low + 1), high + 0.2 * (high - low + 1))
        axis.set_xticks(range(len(arms)), arms, rotation=45, ha='right')
        axis.set_ylabel(f'{title} (%)')
        axis.set_title(f'{title}: mean ± std over {len(study["settings"]["seeds"])} seeds')
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def run_study(work_dir: str, data_dir: str, sizes: DemoSizes = STUDY,
              seeds: Sequence[int] = DEFAULT_SEEDS, arm_names: Sequence[str] = ARM_NAMES,
              jobs: int = 2, skip_training: bool = False,
              command: str = 'python tools/demo.py --study') -> dict:
    """Train and evaluate the arms over the seeds; write ``study.json``, ``study.md`` and
    ``study.png`` to ``work_dir`` and return the study.

    Raises:
        ValueError: for an unknown arm or fewer than two seeds.
        StageRefused / StageFailed: as the demo's stages.
    """
    unknown = [name for name in arm_names if name not in ARM_NAMES]
    if unknown:
        raise ValueError(f'--arms: unknown arm(s) {unknown}; choose from {list(ARM_NAMES)}.')
    if len(set(seeds)) < 2:
        raise ValueError(f'--seeds: the study needs at least two different seeds for a standard '
                         f'deviation (three or more for the documented study), got {list(seeds)}.')
    arms = [arm for arm in ARMS if arm.name in arm_names]
    missing = sorted({arm.reference for arm in arms if arm.reference} - set(arm_names))
    if missing:
        raise ValueError(f'--arms: the arms are compared with {missing}, which must be among '
                         'them.')
    torch.set_num_threads(COMPUTE_THREADS)
    work_dir, data_dir = osp.abspath(work_dir), osp.abspath(data_dir)
    os.makedirs(work_dir, exist_ok=True)
    begin = time.perf_counter()
    prepare_fashion_mnist(data_dir)
    try:
        manifests, timing = execute_runs(study_runs(work_dir, data_dir, sizes, seeds, arms),
                                         jobs, skip_training)
    except RunRefused as error:
        raise StageRefused(f'{error} Rerun without --skip-training.') from error
    except RunFailed as error:
        raise StageFailed(f'{error} Rerunning the same command keeps the finished runs.') \
            from error
    per_seed = {seed: evaluate_seed(work_dir, data_dir, sizes, seed, arms, manifests)
                for seed in seeds}
    summary = summarize_study(per_seed, arms)
    study = dict(
        settings=dict(command=command, seeds=list(seeds), arms=[arm.name for arm in arms],
                      jobs=jobs, machine=f'{platform.machine()}, {os.cpu_count()} CPUs '
                      'visible', **asdict(sizes)),
        per_seed={str(seed): values for seed, values in per_seed.items()},
        summary=summary, comparisons=compare_arms(summary, arms),
        training_s=timing)
    study['figure'] = plot_study(study, osp.join(work_dir, 'study.png'))
    study['timing_s'] = dict(total=time.perf_counter() - begin)
    write_json(study, osp.join(work_dir, STUDY_FILE))
    write_text(render_study_markdown(study), osp.join(work_dir, 'study.md'))
    print('\n' + render_tables(study_tables(study), style='text'), end='')
    print(f'\n[study] done: {osp.join(work_dir, "study.md")}, study.json, study.png', flush=True)
    return study
