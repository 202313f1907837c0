"""stl_mm.analysis.hardware: the CPU's bf16 fast path read from /proc/cpuinfo (AMX, AVX512-BF16
only, neither), the GPU record, and the note a bf16 figure gets on each."""
import re
from types import SimpleNamespace

import pytest
import torch

from stl_mm.analysis.hardware import (ISA_CAP_VARIABLES, bf16_fast_path, describe_hardware,
                                      dtype_note, format_hardware, hardware_tag, parse_cpuinfo)
from cpuinfo_samples import AVX2_ONLY, EPYC_AVX512_BF16, XEON_AMX, cpuinfo


@pytest.fixture
def no_cuda(monkeypatch):
    """No GPU and no oneDNN ISA cap, whatever the machine running the tests has."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    for name in ISA_CAP_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize('text, model, path, speed_flags', [
    (XEON_AMX, 'Intel(R) Xeon(R) Platinum 8480+', 'amx',
     ['amx_bf16', 'amx_tile', 'amx_int8', 'avx512_bf16', 'avx512_fp16', 'avx512f', 'avx2',
      'fma', 'f16c']),
    (EPYC_AVX512_BF16, 'AMD EPYC 9654 96-Core Processor', 'avx512_bf16',
     ['avx512_bf16', 'avx512f', 'avx2', 'fma', 'f16c']),
    (AVX2_ONLY, 'Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz', 'none', ['avx2', 'fma', 'f16c']),
])
def test_cpu_record_of_three_kinds_of_cpu(no_cuda, text, model, path, speed_flags):
    parsed = parse_cpuinfo(text)
    assert (parsed['model'], parsed['processors'], parsed['physical_cores']) == (model, 2, 2)
    assert bf16_fast_path(parsed['flags']) == path
    with_threads = torch.get_num_threads()
    hardware = describe_hardware(text)
    cpu = hardware['cpu']
    assert cpu['model'] == model and cpu['bf16_fast_path'] == path
    assert cpu['speed_flags'] == speed_flags
    assert cpu['torch_threads'] == with_threads
    assert cpu['torch_capability'] == torch.backends.cpu.get_cpu_capability()
    assert hardware['torch'] == torch.__version__
    assert hardware['onednn'] is None or re.fullmatch(r'\d+(\.\d+)+|unknown',
                                                      hardware['onednn'])
    assert hardware['gpu'] is None
    line = format_hardware(hardware)
    assert f'CPU {model}' in line and f'bf16 fast path: {path}' in line
    assert line.endswith('GPU: none')
    assert ('(no AMX)' in line) == (path != 'amx')


def test_fast_path_needs_every_processor_and_both_amx_flags():
    # AMX needs the tile flag as well; without it this CPU falls back to avx512_bf16.
    assert bf16_fast_path(['amx_bf16', 'avx512_bf16']) == 'avx512_bf16'
    mixed = (cpuinfo('A', 'avx2 avx512_bf16', processors=1)
             + cpuinfo('A', 'avx2', processors=1).replace('processor\t: 0', 'processor\t: 1'))
    assert parse_cpuinfo(mixed)['flags'] == ['avx2']


def test_unknown_cpu_flags_are_not_guessed(no_cuda):
    assert parse_cpuinfo('')['flags'] is None
    cpu = describe_hardware('')['cpu']
    assert cpu['speed_flags'] is None and cpu['bf16_fast_path'] == 'unknown'
    assert cpu['model']  # platform's name stands in
    for dtype in ('bf16', 'fp16'):
        assert f'{dtype} fast path unknown' in dtype_note(describe_hardware(''), 'cpu', dtype)


def test_onednn_isa_cap_rules_amx_out(no_cuda, monkeypatch):
    monkeypatch.setenv('ONEDNN_MAX_CPU_ISA', 'AVX512_CORE_BF16')
    hardware = describe_hardware(XEON_AMX)
    assert hardware['cpu']['isa_cap'] == {'ONEDNN_MAX_CPU_ISA': 'AVX512_CORE_BF16'}
    assert hardware['cpu']['bf16_fast_path'] == 'avx512_bf16'
    line = format_hardware(hardware)
    assert 'bf16 fast path: avx512_bf16, oneDNN capped by ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16' in (
        line)
    assert 'ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16' in dtype_note(hardware, 'cpu', 'bf16')
    monkeypatch.setenv('ONEDNN_MAX_CPU_ISA', 'AVX512_CORE')
    assert describe_hardware(EPYC_AVX512_BF16)['cpu']['bf16_fast_path'] == 'none'
    assert bf16_fast_path(parse_cpuinfo(XEON_AMX)['flags'], 'avx10_1_512_amx') == 'amx'
    assert bf16_fast_path(parse_cpuinfo(AVX2_ONLY)['flags'], 'DEFAULT') == 'none'


def test_bf16_and_fp16_notes_name_the_cpu_capability(no_cuda):
    capability = f'torch CPU capability {torch.backends.cpu.get_cpu_capability()}'
    amx, epyc, avx2 = (describe_hardware(text)
                       for text in (XEON_AMX, EPYC_AVX512_BF16, AVX2_ONLY))
    assert dtype_note(amx, 'cpu', 'fp32') is None
    assert dtype_note(amx, 'cpu', 'bf16') == f'bf16 on AMX ({capability})'
    assert dtype_note(epyc, 'cpu', 'bf16') == (
        f'bf16 without AMX (avx512_bf16 only; {capability}): AMX speed-ups do not apply')
    assert dtype_note(avx2, 'cpu', 'bf16') == (
        f'bf16 without AMX or avx512_bf16 (emulated; {capability}): slower than fp32 expected')
    assert dtype_note(amx, 'cpu', 'fp16') == (
        f'fp16 without AMX-FP16 (avx512_fp16 only; {capability}): no faster than fp32 expected')
    assert 'fp16 without AMX-FP16 or avx512_fp16 (emulated' in dtype_note(epyc, 'cpu', 'fp16')
    assert hardware_tag(epyc, 'cpu') == (
        f"AMD EPYC 9654 96-Core Processor, {torch.get_num_threads()}t, "
        f"{torch.backends.cpu.get_cpu_capability()}, bf16 path avx512_bf16")


def test_gpu_record_names_count_and_capability(monkeypatch):
    gpus = [SimpleNamespace(name='NVIDIA H200', major=9, minor=0, total_memory=141 * 2**30),
            SimpleNamespace(name='Tesla V100-SXM2-16GB', major=7, minor=0,
                            total_memory=16 * 2**30)]
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: len(gpus))
    monkeypatch.setattr(torch.cuda, 'get_device_properties', lambda index: gpus[index])
    monkeypatch.setattr(torch.backends.cudnn, 'version', lambda: 91900)
    hardware = describe_hardware(EPYC_AVX512_BF16)
    gpu = hardware['gpu']
    assert gpu['count'] == 2 and gpu['cudnn'] == 91900
    assert gpu['devices'][0] == dict(name='NVIDIA H200', capability='9.0', memory_gb=141.0)
    assert 'GPU: 2: NVIDIA H200 (capability 9.0, 141.0 GB)' in format_hardware(hardware)
    assert hardware_tag(hardware, 'cuda') == 'NVIDIA H200 (sm 9.0)'
    assert hardware_tag(hardware, 'cuda:1') == 'Tesla V100-SXM2-16GB (sm 7.0)'
    # On a GPU the CPU's bf16 path does not matter; a pre-Ampere GPU's lack of bf16 does.
    assert dtype_note(hardware, 'cuda:0', 'bf16') is None
    assert 'before sm 8.0' in dtype_note(hardware, 'cuda:1', 'bf16')
