"""tools/demo.py as a command: the quick demo end to end, and its option errors."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stl_mm.apis.demo import QUICK, prepare_stages
from stl_mm.compat.imagecorruptions import BENCHMARK_CORRUPTIONS

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOL = REPO_ROOT / 'tools' / 'demo.py'


# One refusal of demo_sizes and one of check_seed: the others are the same path, tested in
# tests/apis/test_demo.py (each command here takes seconds of imports).
@pytest.mark.parametrize('option, value, message', [
    ('--epochs', '1', '--epochs must be at least 2'),
    ('--seed', '-1', '--seed must be at least 0'),
])
def test_impossible_options_are_refused_before_anything_runs(option, value, message, tmp_path):
    finished = subprocess.run([sys.executable, str(TOOL), option, value, '--work-dir',
                               str(tmp_path)], capture_output=True, text=True)
    assert finished.returncode != 0
    # The message is the last line: no traceback after it.
    assert finished.stderr.splitlines()[-1].startswith(message), finished.stderr[-2000:]
    assert not any(tmp_path.iterdir())


def test_quick_demo_end_to_end(tmp_path):
    work_dir = tmp_path / 'demo'
    finished = subprocess.run([sys.executable, str(TOOL), '--quick', '--work-dir',
                               str(work_dir)], capture_output=True, text=True, cwd=REPO_ROOT)
    assert finished.returncode == 0, finished.stderr[-3000:]
    printed = finished.stdout
    report = json.loads((work_dir / 'report.json').read_text())

    # Three trainings through tools/train.py, each leaving a checkpoint.
    for stage in ('stage1_token_labeler', 'stage2_student', 'baseline'):
        assert Path(report['settings']['checkpoints'][stage]).is_file()
    logs = {stage: '\n'.join(path.read_text() for path in (work_dir / stage).glob('*/*.log'))
            for stage in ('stage1_token_labeler', 'stage2_student', 'baseline')}
    stage1_checkpoint = report['settings']['checkpoints']['stage1_token_labeler']
    assert 'FrozenTeacherHook: teacher' in logs['stage2_student']
    assert stage1_checkpoint in logs['stage2_student']
    assert 'loss_token' in logs['stage1_token_labeler'] and 'loss_token' in logs[
        'stage2_student']
    assert 'loss_token' not in logs['baseline']

    # Clean and corrupted accuracy of both models, with consistent summaries.
    robustness = report['robustness']
    assert robustness['subset_size'] == QUICK.corruption_images
    for name in ('baseline', 'student'):
        model = robustness['models'][name]
        assert 0 <= model['clean_top1'] <= 100
        assert len(model['cells']) == 15 * 5
        per_corruption = model['per_corruption']
        assert list(per_corruption) == list(BENCHMARK_CORRUPTIONS)
        fog = [model['cells'][f'fog/{s}'] for s in range(1, 6)]
        assert per_corruption['fog']['top1'] == pytest.approx(sum(fog) / 5)
        assert model['mean_corrupted_top1'] == pytest.approx(
            sum(cell['top1'] for cell in per_corruption.values()) / 15)
        if model['clean_top1_subset'] > 0:
            assert model['retention'] == pytest.approx(
                100 * model['mean_corrupted_top1'] / model['clean_top1_subset'])

    # Token-label quality: three views, argmax and Gumbel, on real foreground masks.
    quality = report['token_labels']
    # Patch 4 on the native 28x28 images: a 7x7 token grid.
    assert quality['grid'] == [7, 7] and quality['images'] == QUICK.token_label_images
    assert len(quality['views']) == 3
    for modes in quality['views'].values():
        assert set(modes) == {'argmax', 'gumbel'}
        assert modes['gumbel']['draws'] == QUICK.gumbel_draws
        counts = modes['argmax']['counts']
        assert counts['tokens'] == QUICK.token_label_images * 49
        # Garments cover a real share of the tokens.
        assert 0.2 < modes['argmax']['foreground_fraction'] < 0.9
        for metrics in modes.values():
            for key in ('precision', 'recall', 'iou'):
                assert metrics[key] != metrics[key] or 0 <= metrics[key] <= 1

    # The files: Markdown with every section, strict JSON, the figure.
    markdown = (work_dir / 'report.md').read_text()
    assert '28x28 inputs, 7x7 tokens' in markdown
    # Without a study in the work directory the report says the noise is unknown.
    assert 'Seed noise: unknown' in markdown and 'Seed noise: unknown' in printed
    for section in ('## Clean and corrupted top-1', '## Fashion-MNIST-C per corruption',
                    '## Fashion-MNIST-C per severity', '## Token-label quality',
                    '## Token labels of the teacher', '## Definitions',
                    '## Student vs baseline: within seed noise?'):
        assert section in markdown
    for corruption in BENCHMARK_CORRUPTIONS:
        assert re.search(rf'\| {corruption} \|', markdown)
    assert 'spatial-only (teacher view)' in markdown and 'hard Gumbel' in markdown
    figure = work_dir / 'token_labels.png'
    assert figure.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert '(token_labels.png)' in markdown

    # The tables were printed, and the run says where the data came from.
    assert 'mean corrupted top-1' in printed and 'jpeg_compression' in printed
    assert 'Fashion-MNIST:' in printed and 'source:' in report['settings']['data_source']
    assert report['settings']['command'] == f'python tools/demo.py --quick --work-dir {work_dir}'
    assert report['settings']['quick'] and report['settings']['seed'] == 0

    # Every stage recorded its settings; a rerun reuses them, another seed is refused.
    assert all(stage['trained_now'] and stage['settings']['seed'] == 0
               for stage in report['settings']['stages'].values())
    assert 'Runs: stage1_token_labeler seed 0, trained in this run' in markdown
    stages, timing = prepare_stages(str(work_dir), 'unused', QUICK, 0, skip_training=True)
    assert timing == {} and not any(stage['trained_now'] for stage in stages.values())
    assert {name: stage['checkpoint'] for name, stage in stages.items()} == report['settings'][
        'checkpoints']
    refused = subprocess.run([sys.executable, str(TOOL), '--quick', '--skip-training', '--seed',
                              '1', '--work-dir', str(work_dir)], capture_output=True, text=True,
                             cwd=REPO_ROOT)
    assert refused.returncode != 0
    refusal = refused.stderr.splitlines()[-1]
    assert (refusal.startswith('--skip-training cannot reuse stage stage1_token_labeler')
            and 'seed 0 in the run, 1 requested' in refusal), refused.stderr[-2000:]
    assert json.loads((work_dir / 'report.json').read_text()) == report
