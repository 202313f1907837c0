"""tools/demo.py: the corruption summary by hand, and the quick demo end to end."""
import json
import re
from pathlib import Path

import pytest
from script_loader import load_script

REPO_ROOT = Path(__file__).resolve().parents[2]
demo = load_script(REPO_ROOT / 'tools' / 'demo.py', 'stl_mm_tool_demo')


def test_corruption_summary_of_a_known_accuracy_set():
    corruptions = demo.BENCHMARK_CORRUPTIONS
    # Corruption number c (0..14) scores 80 - c - 2 * (severity - 1) percent.
    cells = {(name, severity): 80. - c - 2 * (severity - 1)
             for c, name in enumerate(corruptions) for severity in range(1, 6)}
    summary = demo.summarize_corruptions(cells, clean_top1=90.)
    # Mean over severities 1..5 of 80 - c - 2(s - 1) is 76 - c.
    assert summary['per_corruption']['gaussian_noise']['top1'] == pytest.approx(76.)
    assert summary['per_corruption']['jpeg_compression']['top1'] == pytest.approx(62.)
    assert summary['per_corruption']['shot_noise']['retention'] == pytest.approx(100 * 75 / 90)
    # Mean over corruptions of 76 - c, c = 0..14, is 69; retention 69 / 90.
    assert summary['mean_corrupted_top1'] == pytest.approx(69.)
    assert summary['retention'] == pytest.approx(100 * 69 / 90)
    # Severity s: mean over c of 80 - c - 2(s - 1) = 73 - 2(s - 1).
    assert summary['per_severity'] == pytest.approx({1: 73., 2: 71., 3: 69., 4: 67., 5: 65.})
    assert summary['cells']['fog/3'] == pytest.approx(80 - 9 - 4)


def test_corruption_summary_without_clean_hits_has_no_retention():
    cells = {(name, s): 0. for name in demo.BENCHMARK_CORRUPTIONS for s in range(1, 6)}
    summary = demo.summarize_corruptions(cells, clean_top1=0.)
    assert summary['mean_corrupted_top1'] == 0
    assert summary['retention'] != summary['retention']  # NaN


def test_quick_demo_end_to_end(tmp_path, capsys):
    work_dir = tmp_path / 'demo'
    report = demo.run_demo(['--quick', '--work-dir', str(work_dir)])
    printed = capsys.readouterr().out

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
    assert robustness['subset_size'] == demo.QUICK.corruption_images
    for name in ('baseline', 'student'):
        model = robustness['models'][name]
        assert 0 <= model['clean_top1'] <= 100
        assert len(model['cells']) == 15 * 5
        per_corruption = model['per_corruption']
        assert list(per_corruption) == list(demo.BENCHMARK_CORRUPTIONS)
        fog = [model['cells'][f'fog/{s}'] for s in range(1, 6)]
        assert per_corruption['fog']['top1'] == pytest.approx(sum(fog) / 5)
        assert model['mean_corrupted_top1'] == pytest.approx(
            sum(cell['top1'] for cell in per_corruption.values()) / 15)
        if model['clean_top1_subset'] > 0:
            assert model['retention'] == pytest.approx(
                100 * model['mean_corrupted_top1'] / model['clean_top1_subset'])

    # Token-label quality: three views, argmax and Gumbel, on real foreground masks.
    quality = report['token_labels']
    assert quality['grid'] == [8, 8] and quality['images'] == demo.QUICK.token_label_images
    assert len(quality['views']) == 3
    for modes in quality['views'].values():
        assert set(modes) == {'argmax', 'gumbel'}
        assert modes['gumbel']['draws'] == demo.QUICK.gumbel_draws
        counts = modes['argmax']['counts']
        assert counts['tokens'] == demo.QUICK.token_label_images * 64
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
    for corruption in demo.BENCHMARK_CORRUPTIONS:
        assert re.search(rf'\| {corruption} \|', markdown)
    assert 'spatial-only (teacher view)' in markdown and 'hard Gumbel' in markdown
    stored = json.loads((work_dir / 'report.json').read_text())
    assert stored['robustness']['models']['student']['cells'].keys() == robustness['models'][
        'student']['cells'].keys()
    figure = work_dir / 'token_labels.png'
    assert figure.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert '(token_labels.png)' in markdown

    # The tables were printed, and the run says where the data came from.
    assert 'mean corrupted top-1' in printed and 'jpeg_compression' in printed
    assert 'Fashion-MNIST:' in printed and 'source:' in report['settings']['data_source']
