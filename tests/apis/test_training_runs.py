"""stl_mm.apis.training_runs: runs side by side, students after their teachers, failures."""
import subprocess
import threading
from pathlib import Path

import pytest

from stl_mm.apis import training_runs
from stl_mm.apis.training_runs import (MANIFEST, RunFailed, RunRefused, TrainingRun,
                                       _last_progress, execute_runs)

CONFIG = str(Path(__file__).resolve().parents[2] / 'configs' / 'stl' / 'demo' /
             'fan_demo_baseline.py')


def runs(tmp_path, **teachers):
    names = ['a', 'b', 'c']
    return [TrainingRun(name, CONFIG, str(tmp_path / name), 2, settings=dict(seed=0),
                        teacher=teachers.get(name)) for name in names]


class Recorder:
    """Writes each final checkpoint; ``barrier`` makes runs wait for each other, so a
    sequential executor would time out."""

    def __init__(self, barrier=None, fail=()):
        self.barrier, self.fail = barrier, fail
        self.events = []
        self.lock = threading.Lock()

    def __call__(self, run, teacher_checkpoint=None, log_file=None):
        with self.lock:
            self.events.append(('start', run.name, teacher_checkpoint, log_file))
        if self.barrier is not None and run.teacher is None:
            self.barrier.wait(timeout=20)
        if run.name in self.fail:
            raise subprocess.CalledProcessError(3, ['tools/train.py'])
        Path(run.work_dir).mkdir(parents=True, exist_ok=True)
        (Path(run.work_dir) / f'epoch_{run.epochs}.pth').write_text(run.name)
        with self.lock:
            self.events.append(('end', run.name))
        return 1.0


def test_independent_runs_train_side_by_side_and_students_wait(monkeypatch, tmp_path):
    # a and b both wait at the barrier: only two runs started together get through.
    recorder = Recorder(barrier=threading.Barrier(2))
    monkeypatch.setattr(training_runs, 'train_run', recorder)
    manifests, timing = execute_runs(runs(tmp_path, c='a'), jobs=2)
    assert set(timing) == {'a', 'b', 'c'}
    starts = [event for event in recorder.events if event[0] == 'start']
    assert {event[1] for event in starts[:2]} == {'a', 'b'}
    # The student starts after its teacher ended, with the teacher's checkpoint.
    assert recorder.events.index(('end', 'a')) < recorder.events.index(starts[2])
    assert starts[2][1:3] == ('c', str(tmp_path / 'a' / 'epoch_2.pth'))
    # Side by side, each child's console goes to its own log.
    assert starts[0][3] == str(tmp_path / starts[0][1] / 'console.log')
    assert all((tmp_path / name / MANIFEST).is_file() for name in 'abc')
    assert manifests['c']['settings']['teacher_checkpoint_sha256'] == manifests['a'][
        'checkpoint_sha256']


def test_one_job_trains_in_order_on_this_console(monkeypatch, tmp_path):
    recorder = Recorder()
    monkeypatch.setattr(training_runs, 'train_run', recorder)
    execute_runs(runs(tmp_path, a='c'), jobs=1)
    assert [event[1] for event in recorder.events if event[0] == 'start'] == ['b', 'c', 'a']
    # A student starts as soon as its teacher is done, before runs listed after it.
    recorder = Recorder()
    monkeypatch.setattr(training_runs, 'train_run', recorder)
    many = runs(tmp_path / 'more', b='a') + [TrainingRun('d', CONFIG, str(tmp_path / 'd'), 2,
                                                         settings=dict(seed=0))]
    execute_runs(many, jobs=1)
    assert [event[1] for event in recorder.events if event[0] == 'start'] == ['a', 'b', 'c', 'd']
    assert all(event[3] is None for event in recorder.events if event[0] == 'start')


def test_a_failure_lets_the_running_runs_finish_and_starts_nothing_new(monkeypatch, tmp_path):
    recorder = Recorder(barrier=threading.Barrier(2), fail=('a', ))
    monkeypatch.setattr(training_runs, 'train_run', recorder)
    with pytest.raises(RunFailed, match='^Training of a failed .*exited with 3'):
        execute_runs(runs(tmp_path, c='a'), jobs=2)
    assert (tmp_path / 'b' / MANIFEST).is_file()
    assert not (tmp_path / 'a' / MANIFEST).exists() and not (tmp_path / 'c').exists()
    # The rerun keeps b and trains a, then c.
    recorder = Recorder()
    monkeypatch.setattr(training_runs, 'train_run', recorder)
    _, timing = execute_runs(runs(tmp_path, c='a'), jobs=2)
    assert sorted(timing) == ['a', 'c']


def test_skip_training_refuses_before_anything_trains(monkeypatch, tmp_path):
    recorder = Recorder()
    monkeypatch.setattr(training_runs, 'train_run', recorder)
    with pytest.raises(RunRefused, match='^--skip-training cannot reuse a: .*not trained yet'):
        execute_runs(runs(tmp_path, c='a'), jobs=2, skip_training=True)
    assert recorder.events == []
    with pytest.raises(ValueError, match='teachers that are not among them'):
        execute_runs(runs(tmp_path, c='zz'))


def test_the_progress_line_reads_the_last_iteration(tmp_path):
    log = tmp_path / 'console.log'
    assert _last_progress(str(log)) == 'starting'
    log.write_text('x\n12/02 - mmengine - INFO - Epoch(train) [1][ 20/250]  lr: 1e-3\n'
                   '12/02 - mmengine - INFO - Epoch(train) [2][140/250]  lr: 1e-3\n')
    assert _last_progress(str(log)) == 'epoch 2, iteration 140/250'
