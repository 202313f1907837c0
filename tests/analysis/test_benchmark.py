"""stl_mm.analysis.benchmark on a tiny FAN: every workload runs, the figures and the JSON add
up, failures are recorded, every result carries the hardware it ran on (a results file of
another machine is refused), and the command line keeps its options and its checks."""
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from stl_mm.analysis.benchmark import (BenchmarkOptions, attention_implementation,
                                       attention_parity, expand_settings, math_attention,
                                       run_benchmark, torch_threads)
from stl_mm.analysis.benchmark_report import (RESULTS_FORMAT, comparisons, format_comparisons,
                                              format_table, machine_info, read_for_append,
                                              shared_settings, write_report)
from stl_mm.analysis.hardware import describe_hardware
from cpuinfo_samples import EPYC_AVX512_BF16, XEON_AMX

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
    with torch_threads(1):
        hardware = describe_hardware()
    out = tmp_path / 'bench' / 'bench.json'
    write_report(str(out), ['benchmark.py'], info, hardware, options, False, results,
                 comparisons(results))
    report = json.loads(out.read_text())
    assert report['format'] == RESULTS_FORMAT
    assert report['hardware']['torch'] == torch.__version__
    assert report['hardware']['cpu']['torch_threads'] == 1
    assert report['hardware']['cpu']['bf16_fast_path'] in ('amx', 'avx512_bf16', 'none')
    run, = report['runs']
    assert run['machine']['attention_max_abs_diff_fp32'] < 1e-4 and run['isolate'] is False
    assert report['settings'] == dict(img_size=[32, 32], warmup=1, repeats=2, num_classes=5,
                                      arch=TINY, config=None, drop_path_rate=0.05, device='cpu')
    for result in report['results']:
        assert result['hardware'] == report['hardware']
        assert result['device'] == 'cpu' and result['run'] == 0
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
    run, = report['runs']
    assert run['command'][0] == 'tools/analysis_tools/benchmark.py'
    assert run['isolate'] is True
    result, = report['results']
    assert result['status'] == 'ok' and result['workload'] == 'plain'
    # The isolated worker's result carries the hardware record, threads included.
    assert result['hardware'] == report['hardware']
    assert report['hardware']['cpu']['torch_threads'] == 1
    assert completed.stdout.startswith('hardware: CPU ')
    assert f"bf16 fast path: {report['hardware']['cpu']['bf16_fast_path']}" in completed.stdout


@pytest.mark.parametrize('args, message', [
    (['--img-size', '224', '224', '3'], 'img_size must be a positive'),
    (['--batch-sizes', '0'], 'Batch sizes must be positive'),
    (['--append'], '--append adds to the --out file; name it with --out.'),
])
def test_command_line_rejects_bad_arguments(args, message):
    completed = _run_tool(*args)
    assert completed.returncode == 2
    assert message in completed.stderr


def _relabelled(results, hardware):
    """The results as if measured on ``hardware`` (another machine's record)."""
    return [dict(result, hardware=hardware) for result in results]


def test_bf16_rows_and_comparison_name_the_cpu_fast_path(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.delenv('ONEDNN_MAX_CPU_ISA', raising=False)
    monkeypatch.delenv('DNNL_MAX_CPU_ISA', raising=False)
    settings = expand_settings(['inference'], [1], ['fp32', 'bf16'], [0], [0], ['sdpa'], [0],
                               ['same'])
    results = run_benchmark(tiny_options(), settings)
    assert [r['status'] for r in results] == ['ok', 'ok']
    capability = torch.backends.cpu.get_cpu_capability()
    epyc = _relabelled(results, describe_hardware(EPYC_AVX512_BF16))
    fp32_row, bf16_row = format_table(epyc).splitlines()[2:]
    assert 'AMD EPYC 9654' in fp32_row and 'AMD EPYC 9654' in bf16_row
    assert 'without AMX' not in fp32_row
    assert (f'bf16 without AMX (avx512_bf16 only; torch CPU capability {capability}): AMX '
            'speed-ups do not apply') in bf16_row
    found = comparisons(epyc)
    bf16_vs_fp32, = [c for c in found if c['kind'] == 'dtype: bf16 vs fp32']
    assert 'without AMX' in bf16_vs_fp32['note']
    assert 'bf16 without AMX (avx512_bf16 only' in format_comparisons(found)
    xeon = _relabelled(results, describe_hardware(XEON_AMX))
    assert f'bf16 on AMX (torch CPU capability {capability})' in format_table(xeon)
    # Results of two machines are never paired in a comparison.
    assert not [c for c in comparisons(xeon[:1] + epyc[1:]) if c['kind'].startswith('dtype')]


def test_append_refuses_a_results_file_of_another_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    options = tiny_options()
    settings = expand_settings(['inference'], [1], ['fp32'], [0], [0], ['sdpa'], [0], ['same'])
    results = run_benchmark(options, settings)
    xeon, epyc = describe_hardware(XEON_AMX), describe_hardware(EPYC_AVX512_BF16)
    out = str(tmp_path / 'bench.json')
    info = machine_info('cpu')
    write_report(out, ['first'], info, xeon, options, False, _relabelled(results, xeon), [])
    written = Path(out).read_text()
    with pytest.raises(ValueError) as refused:
        write_report(out, ['second'], info, epyc, options, False, _relabelled(results, epyc), [],
                     append=True)
    message = str(refused.value)
    assert 'measured on other hardware' in message
    assert "hardware.cpu.bf16_fast_path: recorded 'amx', now 'avx512_bf16'" in message
    assert 'hardware.cpu.model' in message and 'another --out' in message
    assert Path(out).read_text() == written
    # Results of one machine cannot be written under another's record either.
    with pytest.raises(ValueError, match='other hardware than the results file records'):
        write_report(out, ['third'], info, xeon, options, False, _relabelled(results, epyc), [])
    # Same machine and settings: the run is added, numbered, with its own comparisons.
    report = write_report(out, ['second'], info, xeon, options, False,
                          _relabelled(results, xeon), [dict(kind='k')], append=True)
    assert [run['command'] for run in report['runs']] == [['first'], ['second']]
    assert [r['run'] for r in report['results']] == [0, 1]
    assert report['comparisons'] == [dict(kind='k', run=1)]
    assert json.loads(Path(out).read_text()) == json.loads(json.dumps(report))
    # Other shared settings are refused: the table does not show them.
    with pytest.raises(ValueError, match=r'other shared settings.*:\n  settings.repeats: '
                       r'recorded 2, now 3'):
        read_for_append(out, xeon, shared_settings(tiny_options(repeats=3)))


def test_append_refuses_a_results_file_without_hardware_record(tmp_path):
    old = tmp_path / 'old.json'  # the layout written before results recorded their hardware
    old.write_text(json.dumps(dict(command=['benchmark.py'], machine=dict(cpu_model='x'),
                                   settings={}, results=[], comparisons=[])))
    with pytest.raises(ValueError, match='recorded no hardware'):
        read_for_append(str(old), describe_hardware(), shared_settings(tiny_options()))
    assert read_for_append(str(tmp_path / 'new.json'), {}, {}) is None


def test_command_line_append_to_another_machines_file_exits_before_measuring(tmp_path):
    options = tiny_options()
    xeon = describe_hardware(XEON_AMX.replace('8480+', '8480+ (a test record)'))
    setting, = expand_settings(['plain'], [1], ['fp32'], [0], [0], ['sdpa'], [0], ['same'])
    result = dict(asdict(setting), status='error: x', device='cpu', hardware=xeon)
    out = tmp_path / 'xeon.json'
    write_report(str(out), ['benchmark.py'], machine_info('cpu'), xeon, options, False,
                 [result], [])
    written = out.read_text()
    completed = _run_tool('--arch', json.dumps(TINY), '--img-size', '32', '--batch-sizes', '1',
                          '--num-classes', '5', '--workloads', 'plain', '--warmup', '1',
                          '--repeats', '2', '--threads', '1', '--device', 'cpu',
                          '--out', str(out), '--append')
    assert completed.returncode == 2
    assert 'measured on other hardware' in completed.stderr
    assert 'hardware.cpu.model' in completed.stderr
    assert completed.stdout == ''  # refused before measuring anything
    assert out.read_text() == written
