"""The demo's report: its tables, ``report.md`` and the console print-out."""
import json
import math
import os.path as osp
from typing import List

from stl_mm.evaluation.reports import Table, render_tables
from stl_mm.evaluation.robustness.fashion_mnist_c import fashion_mnist_c_tables
from stl_mm.evaluation.token_label_quality import (FOREGROUND_PIXEL_THRESHOLD,
                                                   FOREGROUND_TOKEN_FRACTION)

__all__ = ['NOISE_SIGMAS', 'STUDY_FILE', 'noise_statement', 'report_tables', 'render_markdown',
           'print_tables']

#: A difference is within noise below this many standard errors (the study's verdicts too).
NOISE_SIGMAS = 2.0
#: The study's results, in its work directory (``tools/demo.py --study``).
STUDY_FILE = 'study.json'


def report_tables(report: dict) -> List[Table]:
    """Every table of the report: the Fashion-MNIST-C ones, then the token-label quality."""
    tables = fashion_mnist_c_tables(report['robustness'])
    quality = report['token_labels']
    rows = []
    for view, modes in quality['views'].items():
        for mode, metrics in modes.items():
            label = mode if mode == 'argmax' else f'hard Gumbel (mean of {quality["gumbel_draws"]})'
            rows.append([view, label] + [100 * metrics[key] for key in (
                'precision', 'recall', 'iou')] + [metrics['confidence_correct'],
                                                  metrics['confidence_wrong']])
    tables.append(Table(
        f'Token-label quality of the stage-1 teacher ({quality["images"]} test images, '
        f'{quality["grid"][0]}x{quality["grid"][1]} tokens), "token labelled as the image\'s '
        'class" vs ground-truth foreground tokens',
        ['view', 'labels', 'precision %', 'recall %', 'IoU %', 'conf. correct fg',
         'conf. wrong fg'], rows))
    return tables


def render_markdown(report: dict) -> str:
    """``report.md``: the settings, every table, the figure and the definitions."""
    settings = report['settings']
    timing = report['timing_s']
    grid, patch = report['token_labels']['grid'], settings['patch_size']
    size = grid[0] * patch
    lines = [
        '# STL demo on Fashion-MNIST', '',
        f'Command: `{settings["command"]}` (seed {settings["seed"]}'
        f'{", --quick" if settings["quick"] else ""}). Data: {settings["data_source"]}.', '',
        f'- Training: the first {settings["train_images"]} of the 60,000 training images, '
        f'{settings["teacher_epochs"]} epochs for the stage-1 token labeler (trained once, '
        f'reused by every student), {settings["epochs"]} for the student and for the baseline '
        f'(the same budget); batch {settings["batch_size"]}, on {settings["cpu_threads"]} CPU '
        f'thread(s) per process plus one data-loading worker, up to '
        f'{settings["parallel_trainings"]} trainings side by side ({settings["machine"]}).',
        f'- Model: FAN-ViT `{settings["arch"]}` ({settings["parameters"]:,} parameters), '
        f'{size}x{size} inputs, {grid[0]}x{grid[1]} tokens.',
        '- Runs: ' + '; '.join(
            f'{name} seed {stage["settings"]["seed"]}, '
            + ('trained in this run' if stage['trained_now'] else 'reused: it finished earlier '
               'with the same settings') for name, stage in settings['stages'].items())
        + '. Each stage\'s settings and checkpoint hash are in its `demo_manifest.json`.',
        '- Wall time: ' + ', '.join(f'{name} {seconds:.0f} s' for name, seconds in timing.items())
        + '.', '',
    ]
    lines += [render_tables(report_tables(report)).rstrip('\n'), '']
    lines += ['## Student vs baseline: within seed noise?', '', *report['noise'], '']
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
        f'{FOREGROUND_PIXEL_THRESHOLD:g} (of 255) in the {size}x{size} input; a token '
        f'({patch}x{patch} pixels) is foreground when more than '
        f'{FOREGROUND_TOKEN_FRACTION:.0%} of its pixels are. In the augmented views, the mask '
        'is taken from the teacher view, which shares the student view\'s geometry (crop, '
        'flip, rotate/shear/translate).',
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
    """Print every table of the report as plain text."""
    print('\n' + render_tables(report_tables(report), style='text'), end='')
    print('\n' + '\n'.join(report['noise']))


def noise_statement(robustness: dict, study_file: str) -> List[str]:
    """Plain-words lines for the demo report: are the student's differences to the baseline
    larger than the seed-to-seed noise the study measured?"""
    models = robustness['models']
    if not osp.isfile(study_file):
        return [f'Seed noise: unknown. No study results in `{study_file}`, so these single-seed '
                'differences cannot be told from noise; `python tools/demo.py --study` '
                'measures it (docs/demo.md).']
    with open(study_file) as file:
        study = json.load(file)
    lines = []
    seeds = study['settings']['seeds']
    for metric, title in (('clean_top1', 'clean top-1'),
                          ('mean_corrupted_top1', 'mean corrupted top-1')):
        try:
            stds = [study['summary'][arm][metric]['std'] for arm in ('baseline', 'stl')]
        except KeyError:
            return [f'Seed noise: unknown. `{study_file}` has no baseline and stl arms.']
        difference = models['student'][metric] - models['baseline'][metric]
        # One run of each: the difference's standard deviation is sqrt(s_b^2 + s_s^2).
        error = math.sqrt(sum(std**2 for std in stds))
        inside = not math.isfinite(error) or abs(difference) < NOISE_SIGMAS * error
        lines.append(
            f'The student\'s {title} is {abs(difference):.2f} points '
            f'{"above" if difference > 0 else "below"} the baseline\'s: '
            + ('within noise' if inside else 'more than the noise')
            + f' (the study\'s seed-to-seed standard deviations, {len(seeds)} seeds at its '
            f'budget of {study["settings"]["train_images"]} images x '
            f'{study["settings"]["epochs"]} epochs, give a single-run difference a standard '
            f'deviation of {error:.2f}; within noise below {NOISE_SIGMAS:g} of them).')
    return lines
