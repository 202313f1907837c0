"""stl_mm.apis.demo: its options, its strict checkpoint loading and its per-stage reruns."""
import copy
import json
import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import List, Optional

import pytest
import torch
from fashion_mnist_demo import data_dir, demo_config  # noqa: F401

from stl_mm.apis import training_runs
from stl_mm.apis.demo import (FULL, MAX_SEED, QUICK, StageFailed, StageRefused, check_seed,
                              demo_sizes, load_classifier, prepare_stages, run_demo)
from stl_mm.apis.training_runs import MANIFEST, write_manifest
from stl_mm.utils import TEMP_PREFIX


def test_sizes_of_full_and_quick_runs_with_overrides():
    assert demo_sizes() == FULL and demo_sizes(quick=True) == QUICK
    sizes = demo_sizes(quick=True, train_images=100, epochs=3, teacher_epochs=4)
    assert (sizes.train_images, sizes.epochs, sizes.teacher_epochs) == (100, 3, 4)
    assert sizes.corruption_images == QUICK.corruption_images


@pytest.mark.parametrize('option, overrides', [
    ('--train-images', dict(train_images=-5)),
    ('--train-images', dict(train_images=0)),
    # More than the training set would train on 60,000 and report "the first 60001 images".
    ('--train-images', dict(train_images=60_001)),
    ('--epochs', dict(epochs=1)),
    ('--teacher-epochs', dict(teacher_epochs=0)),
])
def test_sizes_out_of_range_name_their_option(option, overrides):
    value = next(iter(overrides.values()))
    with pytest.raises(ValueError, match=f'^{option} must be at least .*got {value}'):
        demo_sizes(**overrides)


@pytest.mark.parametrize('seed', [-1, MAX_SEED + 1])
def test_a_seed_out_of_numpys_range_is_refused(seed, tmp_path):
    with pytest.raises(ValueError, match=f'^--seed must be at least 0 and at most {MAX_SEED}'):
        check_seed(seed)
    with pytest.raises(ValueError, match='^--seed'):
        run_demo(str(tmp_path / 'demo'), str(tmp_path / 'data'), QUICK, seed=seed)
    assert not any(tmp_path.iterdir())
    check_seed(0)
    check_seed(MAX_SEED)


def test_classifier_checkpoints_load_strictly(data_dir, tmp_path):  # noqa: F811
    from mmpretrain.registry import MODELS
    cfg = demo_config('fan_demo_baseline.py', data_dir)
    model = MODELS.build(copy.deepcopy(dict(cfg.model, data_preprocessor=cfg.data_preprocessor)))
    # mmengine's EMAHook saves the averaged weights as 'state_dict' and the raw ones, under
    # 'module.', as 'ema_state_dict'.
    averaged = {key: value + 1 for key, value in model.state_dict().items()}
    raw = {f'module.{key}': value for key, value in model.state_dict().items()}
    path = tmp_path / 'epoch_2.pth'
    torch.save({'state_dict': averaged, 'ema_state_dict': dict(raw, steps=torch.tensor(3)),
                'meta': {}}, path)
    loaded = load_classifier(cfg, str(path))
    assert not loaded.training
    # The EMA weights are the ones evaluated.
    key = 'head.head.weight'
    assert torch.equal(loaded.state_dict()[key], averaged[key])

    narrow = model.state_dict()
    narrow[key] = narrow[key][:5]
    torch.save({'state_dict': narrow, 'meta': {}}, path)
    with pytest.raises((RuntimeError, ValueError), match=key):
        load_classifier(cfg, str(path))


def test_skip_training_without_earlier_runs_says_what_to_do(data_dir, tmp_path):  # noqa: F811
    with pytest.raises(StageRefused, match='stage stage1_token_labeler: .* has no finished run'
                       '.*Rerun the demo without --skip-training'):
        run_demo(str(tmp_path / 'demo'), data_dir, QUICK, skip_training=True, quick=True)


class FakeTraining:
    """Stands in for tools/train.py: records what it trains, writes each final checkpoint.

    Args:
        killed_in: The stage during which the run is killed (after writing a partial
            checkpoint), as ``kill -9`` would end the child process.
    """

    def __init__(self, killed_in: Optional[str] = None):
        self.killed_in = killed_in
        self.trained: List[str] = []

    def __call__(self, run, teacher_checkpoint=None, log_file=None):
        os.makedirs(run.work_dir, exist_ok=True)
        if run.name == self.killed_in:
            (Path(run.work_dir) / 'epoch_1.pth').write_text('partial')
            raise subprocess.CalledProcessError(-9, ['tools/train.py'])
        self.trained.append(run.name)
        # Different bytes on every training, as real checkpoints (their meta has a timestamp).
        (Path(run.work_dir) / f'epoch_{run.epochs}.pth').write_text(
            f'{run.name} seed {run.settings["seed"]} teacher {teacher_checkpoint} '
            f'{time.perf_counter_ns()}')
        return 1.0


def prepare(monkeypatch, work_dir, seed=0, sizes=QUICK, skip_training=False, killed_in=None):
    """``prepare_stages`` with :class:`FakeTraining`; return (stages, fake)."""
    training = FakeTraining(killed_in)
    monkeypatch.setattr(training_runs, 'train_run', training)
    stages, _ = prepare_stages(str(work_dir), 'unused', sizes, seed, skip_training)
    return stages, training


def test_a_rerun_trains_only_the_stages_that_did_not_finish(monkeypatch, tmp_path, capsys):
    # Killed in stage 2: stage 1 and the baseline (trained beside it) finished (manifests
    # written), stage 2 left a partial run.
    with pytest.raises(StageFailed, match='^Training of stage2_student failed .* exited with -9'
                       '.* keeps the stages that finished'):
        prepare(monkeypatch, tmp_path, killed_in='stage2_student')
    assert (tmp_path / 'stage1_token_labeler' / MANIFEST).is_file()
    assert (tmp_path / 'baseline' / MANIFEST).is_file()
    assert not (tmp_path / 'stage2_student' / MANIFEST).exists()

    stages, training = prepare(monkeypatch, tmp_path)
    assert training.trained == ['stage2_student']
    assert {name: stage['trained_now'] for name, stage in stages.items()} == {
        'stage1_token_labeler': False, 'baseline': False, 'stage2_student': True}
    printed = capsys.readouterr().out
    assert 'stage1_token_labeler: finished earlier with the same settings' in printed

    again, training = prepare(monkeypatch, tmp_path)
    assert training.trained == [] and not any(stage['trained_now'] for stage in again.values())
    assert {name: stage['checkpoint'] for name, stage in again.items()} == {
        name: stage['checkpoint'] for name, stage in stages.items()}

    # Other student / baseline epochs: the teacher (its own epochs unchanged) is kept.
    _, training = prepare(monkeypatch, tmp_path, sizes=replace(QUICK, epochs=3))
    assert sorted(training.trained) == ['baseline', 'stage2_student']
    assert 'epochs 2 in the run, 3 requested' in capsys.readouterr().out


def test_skip_training_after_a_run_with_another_seed_is_refused(monkeypatch, tmp_path):
    prepare(monkeypatch, tmp_path, seed=0)
    # A rerun with seed 1 killed in stage 2: stage 1 and the baseline are of seed 1, stage 2
    # has no finished run.
    with pytest.raises(StageFailed):
        prepare(monkeypatch, tmp_path, seed=1, killed_in='stage2_student')
    with pytest.raises(StageRefused, match=r'--skip-training cannot reuse stage '
                       r'stage1_token_labeler: .*seed 1 in the run, 0 requested.*Rerun the demo '
                       r'without --skip-training .* or use another --work-dir'):
        prepare(monkeypatch, tmp_path, seed=0, skip_training=True)
    with pytest.raises(StageRefused, match='stage stage2_student: .* has no finished run'):
        prepare(monkeypatch, tmp_path, seed=1, skip_training=True)
    # Without --skip-training the rerun retrains what differs, and then it is reusable.
    _, training = prepare(monkeypatch, tmp_path, seed=0)
    assert sorted(training.trained) == ['baseline', 'stage1_token_labeler', 'stage2_student']
    stages, training = prepare(monkeypatch, tmp_path, seed=0, skip_training=True)
    assert training.trained == []
    assert {stage['settings']['seed'] for stage in stages.values()} == {0}


def test_a_student_of_another_teacher_is_not_reused(monkeypatch, tmp_path, capsys):
    stages, _ = prepare(monkeypatch, tmp_path)
    # Stage 1 trained again with the same settings: other weights, so another teacher.
    teacher = stages['stage1_token_labeler']
    Path(teacher['checkpoint']).write_text('another teacher')
    write_manifest(str(tmp_path / 'stage1_token_labeler'), teacher['settings'],
                   teacher['checkpoint'])
    with pytest.raises(StageRefused, match='stage stage2_student: .*teacher_checkpoint_sha256'):
        prepare(monkeypatch, tmp_path, skip_training=True)
    _, training = prepare(monkeypatch, tmp_path)
    assert training.trained == ['stage2_student']
    assert 'stage2_student: training from scratch: its run in' in capsys.readouterr().out


def test_a_changed_final_checkpoint_is_retrained(monkeypatch, tmp_path):
    stages, _ = prepare(monkeypatch, tmp_path)
    Path(stages['baseline']['checkpoint']).write_text('truncat')
    with pytest.raises(StageRefused, match='stage baseline: its final checkpoint .* changed'):
        prepare(monkeypatch, tmp_path, skip_training=True)
    _, training = prepare(monkeypatch, tmp_path)
    assert training.trained == ['baseline']


def test_the_manifest_records_the_settings_of_the_stage(monkeypatch, tmp_path):
    stages, _ = prepare(monkeypatch, tmp_path, seed=7)
    manifest = json.loads((tmp_path / 'stage2_student' / MANIFEST).read_text())
    settings = manifest['settings']
    assert (settings['seed'], settings['train_images'], settings['epochs']) == (
        7, QUICK.train_images, QUICK.epochs)
    assert settings['teacher_checkpoint_sha256'] == stages['stage1_token_labeler'][
        'checkpoint_sha256']
    assert 'teacher_checkpoint_sha256' not in stages['baseline']['settings']
    assert settings['config_sha256'] != stages['baseline']['settings']['config_sha256']
    assert manifest['checkpoint'] == f'epoch_{QUICK.epochs}.pth'
    assert not list(tmp_path.glob(f'*/{TEMP_PREFIX}*'))
