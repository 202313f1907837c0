"""stl_mm.apis.demo_study: its arms, its statistics and verdicts, a resumed run, the noise line
of the demo report."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fashion_mnist_demo import REPO_ROOT, data_dir  # noqa: F401
from mmpretrain.registry import MODELS

from stl_mm.apis import training_runs
from stl_mm.apis.demo_report import noise_statement
from stl_mm.apis.demo_study import (ARMS, QUICK_STUDY, STUDY, arm_config, compare_arms,
                                    run_study, study_runs, study_sizes, summarize_study, verdict)

ARM = {arm.name: arm for arm in ARMS}


def test_every_paper_arm_is_there_with_its_reference():
    assert set(ARM) == {'baseline', 'stl', 'argmax', 'softmax', 'full_aug_teacher',
                        'small_teacher', 'token_weight_0.5', 'token_weight_2', 'aligned_mix'}
    for arm in ARMS:
        assert arm.reference is None or arm.reference in ARM
    assert STUDY.train_images < 60_000 and study_sizes() == STUDY
    assert study_sizes(train_images=500).train_images == 500
    with pytest.raises(ValueError, match='^--epochs must be at least 2'):
        study_sizes(epochs=1)


def test_each_arm_config_changes_what_it_says(data_dir):  # noqa: F811
    configs = {arm.name: arm_config(arm, data_dir) for arm in ARMS}
    loss = {name: cfg.model.get('token_loss') for name, cfg in configs.items()}
    assert configs['baseline'].model.mode == 'plain' and loss['baseline'] is None
    assert (loss['stl'].mode, loss['stl'].loss_weight, loss['stl'].token_label_mix) == (
        'gumbel', 1.0, 'none')
    assert loss['argmax'].mode == 'argmax' and loss['softmax'].mode == 'softmax'
    assert loss['token_weight_0.5'].loss_weight == 0.5
    assert loss['token_weight_2'].loss_weight == 2.0
    assert loss['aligned_mix'].token_label_mix == 'aligned'
    teacher = configs['small_teacher'].default_hooks.teacher.model.backbone.arch
    assert teacher.embed_dims == 32 and configs['stl'].default_hooks.teacher.model.backbone.arch[
        'embed_dims'] == configs['stl'].model.backbone.arch['embed_dims'] == 64
    # The student stays the same model in every arm.
    assert {cfg.model.backbone.arch['embed_dims'] for cfg in configs.values()} == {64}


def _views_are_equal(cfg, indices) -> list:
    """Per training image, whether its student and teacher views are the same tensor."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS
    init_default_scope('mmpretrain')
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    same = []
    for index in indices:
        torch.manual_seed(index)
        np.random.seed(index)
        packed = dataset[index]
        same.append(torch.equal(packed['inputs'], packed['teacher_inputs']))
    return same


def test_the_full_augmentation_teacher_sees_the_student_view(data_dir):  # noqa: F811
    assert all(_views_are_equal(arm_config(ARM['full_aug_teacher'], data_dir), range(8)))
    # The default student's teacher does not see the photometric ops and erasing.
    assert not all(_views_are_equal(arm_config(ARM['stl'], data_dir), range(8)))


def test_runs_of_the_study_name_their_teachers(tmp_path):
    runs = study_runs(str(tmp_path), '/data', QUICK_STUDY, [0, 1],
                      [ARM['baseline'], ARM['stl'], ARM['small_teacher']])
    by_name = {run.name: run for run in runs}
    assert sorted(by_name) == sorted(f'seed{s}/{n}' for s in (0, 1) for n in (
        'labeler', 'small_labeler', 'baseline', 'stl', 'small_teacher'))
    assert by_name['seed1/stl'].teacher == 'seed1/labeler'
    assert by_name['seed1/small_teacher'].teacher == 'seed1/small_labeler'
    assert 'model.backbone.arch.embed_dims=32' in by_name['seed0/small_labeler'].options
    assert by_name['seed0/baseline'].teacher is None
    assert 'randomness.seed=1' in by_name['seed1/baseline'].options
    # Where the data lives is passed, not recorded: the runs stay reusable elsewhere.
    assert 'train_dataloader.dataset.data_prefix=/data' in by_name['seed1/baseline'].command()
    assert not any('/data' in option for option in by_name['seed1/baseline'].options)
    assert by_name['seed0/stl'].work_dir == str(tmp_path / 'seed0' / 'stl')


def test_mean_std_and_verdicts_are_computed_from_the_seeds():
    arms = [ARM['baseline'], ARM['stl'], ARM['argmax']]
    per_seed = {
        0: {'baseline': dict(clean_top1=80.0, mean_corrupted_top1=50.0),
            'stl': dict(clean_top1=84.0, mean_corrupted_top1=50.5),
            'argmax': dict(clean_top1=83.0, mean_corrupted_top1=40.0)},
        1: {'baseline': dict(clean_top1=81.0, mean_corrupted_top1=52.0),
            'stl': dict(clean_top1=85.0, mean_corrupted_top1=51.0),
            'argmax': dict(clean_top1=84.0, mean_corrupted_top1=60.0)},
        2: {'baseline': dict(clean_top1=82.0, mean_corrupted_top1=54.0),
            'stl': dict(clean_top1=86.0, mean_corrupted_top1=51.5),
            'argmax': dict(clean_top1=85.0, mean_corrupted_top1=50.0)},
    }
    summary = summarize_study(per_seed, arms)
    assert summary['baseline']['clean_top1'] == dict(mean=81.0, std=1.0,
                                                     values=[80.0, 81.0, 82.0])
    assert summary['baseline']['mean_corrupted_top1']['std'] == pytest.approx(2.0)
    comparisons = compare_arms(summary, arms)
    stl = comparisons['stl']['metrics']['clean_top1']
    # 85 - 81 = 4 with standard error sqrt(1/3 + 1/3) = 0.816: 4.9 standard errors.
    assert stl['difference'] == pytest.approx(4.0)
    assert stl['standard_error'] == pytest.approx(math.sqrt(2 / 3))
    assert stl['verdict'] == 'higher: agrees with the paper'
    # 51 vs 52: -1 with standard error sqrt(0.25/3 + 4/3) = 1.19: within noise.
    assert comparisons['stl']['metrics']['mean_corrupted_top1']['verdict'] == 'within noise'
    # argmax vs stl: 84 vs 85 with standard error 0.816: within noise (paper: lower).
    assert comparisons['argmax']['metrics']['clean_top1']['verdict'] == 'within noise'
    assert 'baseline' not in comparisons
    assert verdict(-3.0, 1.0, 'lower') == 'lower: agrees with the paper'
    assert verdict(3.0, 1.0, 'lower') == 'higher: against the paper'
    assert verdict(3.0, 1.0, None) == 'higher (no paper claim)'
    assert verdict(1.9, 1.0, 'higher') == 'within noise'
    assert verdict(5.0, float('nan'), 'higher') == 'within noise'


def test_the_demo_report_says_whether_a_difference_is_within_noise(tmp_path):
    robustness = {'models': {'baseline': dict(clean_top1=86.0, mean_corrupted_top1=60.0),
                             'student': dict(clean_top1=86.5, mean_corrupted_top1=64.0)}}
    missing = noise_statement(robustness, str(tmp_path / 'study.json'))
    assert len(missing) == 1 and missing[0].startswith('Seed noise: unknown')
    study = dict(settings=dict(seeds=[0, 1, 2], train_images=12000, epochs=3), summary={
        'baseline': dict(clean_top1=dict(std=0.3), mean_corrupted_top1=dict(std=1.2)),
        'stl': dict(clean_top1=dict(std=0.4), mean_corrupted_top1=dict(std=0.9))})
    (tmp_path / 'study.json').write_text(json.dumps(study))
    clean, corrupted = noise_statement(robustness, str(tmp_path / 'study.json'))
    # 0.5 against sqrt(0.09 + 0.16) = 0.5: within 2 of them; 4.0 against 1.5: beyond.
    assert clean.startswith('The student\'s clean top-1 is 0.50 points above the baseline\'s: '
                            'within noise') and 'standard deviation of 0.50' in clean
    assert corrupted.startswith('The student\'s mean corrupted top-1 is 4.00 points above '
                                'the baseline\'s: more than the noise')


class RandomWeights:
    """Stands in for tools/train.py: saves the run's model with seeded random weights."""

    def __init__(self):
        self.trained = []

    def __call__(self, run, teacher_checkpoint=None, log_file=None):
        from mmengine.config import Config
        from stl_mm.apis.demo_study import _parse_options
        cfg = Config.fromfile(run.config)
        cfg.merge_from_dict(_parse_options([o for o in run.options if o.startswith('model.')]))
        torch.manual_seed(len(self.trained))
        model = MODELS.build(dict(cfg.model, data_preprocessor=cfg.data_preprocessor))
        os.makedirs(run.work_dir, exist_ok=True)
        torch.save({'state_dict': model.state_dict(), 'meta': {}},
                   Path(run.work_dir) / f'epoch_{run.epochs}.pth')
        self.trained.append(run.name)
        return 0.0


def test_a_study_writes_its_table_and_plot_and_resumes(
        monkeypatch, tmp_path, capsys, data_dir):  # noqa: F811
    fake = RandomWeights()
    monkeypatch.setattr(training_runs, 'train_run', fake)
    arms = ['baseline', 'stl', 'argmax', 'small_teacher']
    study = run_study(str(tmp_path), data_dir, QUICK_STUDY, [0, 1], arms, jobs=2)
    assert len(fake.trained) == 2 * (len(arms) + 2)
    for name in ('study.json', 'study.md', 'study.png'):
        assert (tmp_path / name).is_file()
    assert (tmp_path / 'study.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    for arm in arms:
        values = [study['per_seed'][str(seed)][arm]['clean_top1'] for seed in (0, 1)]
        assert study['summary'][arm]['clean_top1']['mean'] == pytest.approx(np.mean(values))
        assert study['summary'][arm]['clean_top1']['std'] == pytest.approx(
            np.std(values, ddof=1))
    assert 'token_label_iou' not in study['per_seed']['0']['baseline']
    assert 0 <= study['per_seed']['0']['small_teacher']['token_label_iou'] <= 100
    markdown = (tmp_path / 'study.md').read_text()
    assert 'mean ± standard deviation over 2 seeds' in markdown and '| small_teacher |' in markdown
    assert '![study](study.png)' in markdown
    capsys.readouterr()

    again = run_study(str(tmp_path), data_dir, QUICK_STUDY, [0, 1], arms, jobs=2)
    printed = capsys.readouterr().out
    assert len(fake.trained) == 2 * (len(arms) + 2)
    assert printed.count('evaluation of these checkpoints reused') == 2
    # (as JSON: NaN, an undefined retention, equals itself there)
    assert json.dumps(again['summary']) == json.dumps(study['summary'])

    with pytest.raises(ValueError, match='--arms: the arms are compared with'):
        run_study(str(tmp_path), data_dir, QUICK_STUDY, [0, 1], ['stl'])
    with pytest.raises(ValueError, match='--seeds: the study needs at least two'):
        run_study(str(tmp_path), data_dir, QUICK_STUDY, [0, 0], arms)


def test_the_study_command_line_refuses_bad_options(tmp_path):
    for options, message in ((['--arms', 'nope'], 'invalid choice'),
                             (['--seeds', '0', '0'], 'at least two different seeds'),
                             (['--jobs', '0'], '--jobs must be at least 1')):
        finished = subprocess.run([sys.executable, str(REPO_ROOT / 'tools' / 'demo.py'),
                                   '--study', '--work-dir', str(tmp_path), *options],
                                  capture_output=True, text=True, cwd=REPO_ROOT)
        assert finished.returncode != 0 and message in finished.stderr, finished.stderr[-800:]
    assert not (tmp_path / 'study').exists()
