"""stl_mm.analysis.benchmark on a tiny FAN: every workload runs, the figures and the JSON add
up, failures are recorded, and the command line keeps its options and its checks."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from stl_mm.analysis.benchmark import (BenchmarkOptions, attention_implementation,
                                       attention_parity, expand_settings, math_attention,
                                       run_benchmark)
from stl_mm.analysis.benchmark_report import comparisons, machine_info, write_report

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / 'tools' / 'analysis_tools' / 'benchmark.py'
TINY = dict(embed_dims=32, depth=2, num_heads=2, hybrid_stem=dict(depths=[1, 1], dims=[8, 16]))
SMALLER_TEACHER = json.dumps(dict(TINY, depth=1))


def tiny_options(**overrides) -> BenchmarkOptions:
    return BenchmarkOptions(**dict(dict(arch=TINY, img_size=(32, 32), num_classes=5, warmup=1,
                                        repeats=2, device='cpu', threads=1), **overrides))


def test_math_attention_matches_sdpa_and_swap_is_undone():
    query, key, value = torch.randn(3, 2, 4, 5, 8).unbind(0)
    torch.testing.assert_close(
        math_attention(query, key, value), F.scaled_dot_product_attention(query, key, value))
    original = F.scaled_dot_product_attention
    with attention_implementation('math'):
        assert F.scaled_dot_product_attention is math_attention
    assert F.scaled_dot_product_attention is original
    with pytest.raises(ValueError, match='attention must be one of'):
        with attention_implementation('flash'):
            pass


def test_tiny_run_measures_every_workload_and_writes_json(tmp_path):
    options = tiny_options()
    settings = expand_settings(['inference', 'plain', 'labeler', 'student'], [2], ['fp32'],
                               [0], [0], ['sdpa', 'math'], [0], ['same', SMALLER_TEACHER])
    # 2 attentions x (inference, plain, labeler, student x 2 teachers)
    assert len(settings) == 10
    printed = []
    results = run_benchmark(options, settings, on_result=printed.append)
    assert printed == results
    assert all(r['status'] == 'ok' for r in results), [r['status'] for r in results]
    info = dict(machine_info('cpu'), attention_max_abs_diff_fp32=attention_parity(options))
    out = tmp_path / 'bench' / 'bench.json'
    write_report(str(out), ['benchmark.py'], info, options, False, results, comparisons(results))
    report = json.loads(out.read_text())
    assert report['machine']['torch'] == torch.__version__
    assert report['machine']['attention_max_abs_diff_fp32'] < 1e-4
    assert report['settings'] == dict(img_size=[32, 32], warmup=1, repeats=2, num_classes=5,
                                      arch=TINY, config=None, isolate=False)
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


def test_failed_setting_is_reported_not_raised():
    settings = expand_settings(['inference'], [1], ['fp32'], [0], [0], ['sdpa'], [0], ['same'])
    result, = run_benchmark(tiny_options(img_size=(30, 30), warmup=0, repeats=1), settings)
    assert result['status'].startswith('error: ValueError')
    assert 'multiples of 16' in result['status']


def test_bad_options_and_settings_are_refused_with_the_reason():
    with pytest.raises(ValueError, match='img_size must be a positive'):
        tiny_options(img_size=(224, 224, 3))
    with pytest.raises(ValueError, match='repeats must be positive'):
        tiny_options(repeats=0)
    with pytest.raises(ValueError, match='Batch sizes must be positive'):
        expand_settings(['plain'], [0], ['fp32'], [0], [0], ['sdpa'], [0], ['same'])
    with pytest.raises(ValueError, match=r"Unknown values \['fp8'\]"):
        expand_settings(['plain'], [1], ['fp8'], [0], [0], ['sdpa'], [0], ['same'])
    assert len(expand_settings(['inference', 'plain'], [1], ['fp32'], [0], [0], ['sdpa'],
                               [0, 1], ['same'])) == 3  # checkpointing only in training


def _run_tool(*args: str) -> subprocess.CompletedProcess:
    """The tool as users run it (this checkout's package first on the path)."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')]))
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=path))


def test_command_line_runs_an_isolated_setting_and_writes_its_report(tmp_path):
    out = tmp_path / 'cli.json'
    completed = _run_tool('--arch', json.dumps(TINY), '--img-size', '32', '--batch-sizes', '1',
                          '--num-classes', '5', '--workloads', 'plain', '--warmup', '0',
                          '--repeats', '1', '--threads', '1', '--device', 'cpu', '--isolate',
                          '--out', str(out))
    assert completed.returncode == 0, completed.stderr
    report = json.loads(out.read_text())
    assert report['command'][0] == 'tools/analysis_tools/benchmark.py'
    assert report['machine']['torch_threads'] == 1
    result, = report['results']
    assert result['status'] == 'ok' and result['workload'] == 'plain'
    assert report['settings']['isolate'] is True


@pytest.mark.parametrize('args, message', [
    (['--img-size', '224', '224', '3'], 'img_size must be a positive'),
    (['--batch-sizes', '0'], 'Batch sizes must be positive'),
])
def test_command_line_rejects_bad_arguments(args, message):
    completed = _run_tool(*args)
    assert completed.returncode == 2
    assert message in completed.stderr
