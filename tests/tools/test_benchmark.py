"""Smoke test of tools/benchmark.py on a tiny FAN: every workload runs and the JSON adds up."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from script_loader import load_script

TOOL = Path(__file__).resolve().parents[2] / 'tools' / 'benchmark.py'
TINY = json.dumps(dict(embed_dims=32, depth=2, num_heads=2,
                       hybrid_stem=dict(depths=[1, 1], dims=[8, 16])))
SMALLER_TEACHER = json.dumps(dict(embed_dims=32, depth=1, num_heads=2,
                                  hybrid_stem=dict(depths=[1, 1], dims=[8, 16])))


@pytest.fixture(scope='module')
def benchmark():
    return load_script(TOOL, 'stl_mm_benchmark_tool')


def test_math_attention_matches_sdpa_and_swap_is_undone(benchmark):
    query, key, value = torch.randn(3, 2, 4, 5, 8).unbind(0)
    torch.testing.assert_close(
        benchmark.math_attention(query, key, value),
        F.scaled_dot_product_attention(query, key, value))
    original = F.scaled_dot_product_attention
    with benchmark.attention_implementation('math'):
        assert F.scaled_dot_product_attention is benchmark.math_attention
    assert F.scaled_dot_product_attention is original
    with pytest.raises(ValueError, match='attention must be one of'):
        with benchmark.attention_implementation('flash'):
            pass


def test_tiny_run_measures_every_workload_and_writes_json(benchmark, tmp_path):
    out = tmp_path / 'bench.json'
    results = benchmark.main([
        '--arch', TINY, '--img-size', '32', '--batch-sizes', '2', '--num-classes', '5',
        '--workloads', 'inference', 'plain', 'labeler', 'student', '--teacher-arch', 'same',
        SMALLER_TEACHER, '--attention', 'sdpa', 'math', '--warmup', '1', '--repeats', '2',
        '--threads', '1',
        '--out', str(out)
    ])
    assert all(r['status'] == 'ok' for r in results), [r['status'] for r in results]
    # 2 attentions x (inference, plain, labeler, student x 2 teachers)
    assert len(results) == 10
    report = json.loads(out.read_text())
    assert report['machine']['torch'] == torch.__version__
    assert report['machine']['attention_max_abs_diff_fp32'] < 1e-4
    for result in report['results']:
        assert len(result['times_ms']) == 2
        assert result['min_ms'] <= result['median_ms'] <= result['max_ms']
        assert result['images_per_s'] == pytest.approx(2e3 / result['median_ms'])
        assert result['rss_peak_mb'] >= result['rss_start_mb'] > 0
        if result['workload'] == 'student':
            assert 0 < result['teacher_forward']['median_ms']
    kinds = [c['kind'] for c in report['comparisons']]
    assert kinds.count('student / plain step') == 4
    assert kinds.count('attention: math vs sdpa') == 5
    stage2 = next(c for c in report['comparisons'] if c['kind'] == 'student / plain step')
    student = next(r for r in report['results'] if r['workload'] == 'student')
    plain = next(r for r in report['results'] if r['workload'] == 'plain')
    assert stage2['time_ratio'] == pytest.approx(student['median_ms'] / plain['median_ms'])


def test_failed_setting_is_reported_not_raised(benchmark):
    results = benchmark.main([
        '--arch', TINY, '--img-size', '30', '--batch-sizes', '1', '--num-classes', '5',
        '--workloads', 'inference', '--warmup', '0', '--repeats', '1'
    ])
    assert results[0]['status'].startswith('error: ValueError')
    assert 'multiples of 16' in results[0]['status']


def test_bad_arguments_are_rejected(benchmark):
    with pytest.raises(SystemExit):
        benchmark.main(['--img-size', '224', '224', '3'])
    with pytest.raises(SystemExit):
        benchmark.main(['--batch-sizes', '0'])
