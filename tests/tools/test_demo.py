"""tools/demo.py as a command: the quick demo end to end, and its option errors."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stl_mm.apis.demo import QUICK
from stl_mm.compat.imagecorruptions import BENCHMARK_CORRUPTIONS

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOL = REPO_ROOT / 'tools' / 'demo.py'


def test_an_epoch_budget_below_the_warm_up_is_refused(tmp_path):
    finished = subprocess.run([sys.executable, str(TOOL), '--epochs', '1', '--work-dir',
                               str(tmp_path)], capture_output=True, text=True)
    assert finished.returncode != 0
    assert '--epochs must be at least 2' in finished.stderr
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
    assert quality['grid'] == [8, 8] and quality['images'] == QUICK.token_label_images
    assert len(quality['views']) == 3
    for modes in quality['views'].values():
        assert set(modes) == {'argmax', 'gumbel'}
        assert modes['gumbel']['draws'] == QUICK.gumbel_draws
        counts = modes['argmax']['counts']
        assert counts['tokens'] == QUICK.token_label_images * 64
        # Garments cover a real share of the tokens.
        assert 0.2 < modes['argmax']['foreground_fraction'] < 0.9
        for metrics in modes.values():
            for key in ('precision', 'recall', 'iou'):
                assert metrics[key] != metrics[key] or 0 <= metrics[key] <= 1

    # The files: Markdown with every section, strict JSON, the figure.
    markdown = (work_dir / 'report.md').read_text()
    for section in ('## Clean and corrupted top-1', '## Fashion-MNIST-C per corruption',
                    '## Fashion-MNIST-C per severity', '## Token-label quality',
                    '## Token labels of the teacher', '## Definitions'):
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
