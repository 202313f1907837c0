"""What a benchmark figure needs to be read: the CPU, its bf16 / fp16 support and the GPU.

A speed-up measured on one processor does not carry to another. AMP bf16 inference of
FAN-T-Hybrid ran 2.07x faster than fp32 on a Xeon with AMX and about 2x faster on an AMD
EPYC with AVX512-BF16 but no AMX. Where oneDNN uses neither, it emulates bf16, and the same
command ran 1.6x slower than fp32.
:func:`describe_hardware` records what decides this, so every benchmark result carries it
and the report can say which fast path a bf16 / fp16 figure had.
"""
import os
import platform
import re
from typing import Dict, List, Optional

import torch

#: /proc/cpuinfo flags that decide AMP bf16 / fp16 speed on x86 CPUs (oneDNN's kernels):
#: AMX tiles (bf16, int8, fp16), AVX512-BF16 / AVX512-FP16 dot products, the AVX-512 and
#: AVX2 / FMA fp32 baselines and F16C half conversions.
SPEED_FLAGS = ('amx_bf16', 'amx_tile', 'amx_int8', 'amx_fp16', 'avx512_bf16', 'avx512_fp16',
               'avx512f', 'avx2', 'fma', 'f16c')

#: oneDNN environment variables that cap the instruction set it uses, the first one set
#: wins (a cap can turn AMX off on a CPU that has it).
ISA_CAP_VARIABLES = ('ONEDNN_MAX_CPU_ISA', 'DNNL_MAX_CPU_ISA')


def parse_cpuinfo(text: str) -> dict:
    """The CPU model, processor / core counts and flags of a ``/proc/cpuinfo`` text.

    Args:
        text: The file's content (x86 ``flags``; ARM ``Features`` lines are read alike).

    Returns:
        ``model``: the first ``model name`` (None if absent); ``processors``: the number of
        ``processor`` entries; ``physical_cores``: distinct (``physical id``, ``core id``)
        pairs (None when the file does not give them); ``flags``: the flags every processor
        lists (a flag some processors lack is not relied on), sorted; None when no processor
        lists flags.
    """
    model, processors, cores = None, 0, set()
    flag_sets: List[set] = []
    entry: Dict[str, str] = {}
    for line in text.splitlines() + ['']:
        if not line.strip():
            if entry:
                processors += 'processor' in entry
                if 'physical id' in entry and 'core id' in entry:
                    cores.add((entry['physical id'], entry['core id']))
                flags = entry.get('flags', entry.get('Features'))
                if flags is not None:
                    flag_sets.append(set(flags.split()))
                model = model or entry.get('model name')
            entry = {}
            continue
        key, _, value = line.partition(':')
        entry[key.strip()] = value.strip()
    flags = sorted(set.intersection(*flag_sets)) if flag_sets else None
    return dict(model=model, processors=processors, physical_cores=len(cores) or None,
                flags=flags)


#: bf16 fast paths from slowest to fastest.
FAST_PATHS = ('none', 'avx512_bf16', 'amx')


def _isa_cap_limit(cap: Optional[str]) -> str:
    """The fastest bf16 path a oneDNN ISA cap (``ONEDNN_MAX_CPU_ISA``) leaves usable."""
    name = (cap or 'DEFAULT').upper()
    if name == 'DEFAULT' or 'AMX' in name:
        return 'amx'
    if name in ('AVX512_CORE_BF16', 'AVX512_CORE_FP16') or name.startswith('AVX10'):
        return 'avx512_bf16'
    return 'none'


def bf16_fast_path(flags: Optional[List[str]], isa_cap: Optional[str] = None) -> str:
    """How this CPU runs bf16 matrix products: ``'amx'``, ``'avx512_bf16'`` or ``'none'``.

    ``'amx'`` needs both ``amx_bf16`` and ``amx_tile``. ``'none'`` means neither AMX nor
    AVX512-BF16: oneDNN emulates bf16 through fp32, slower than fp32 itself (on an AMD EPYC
    with the cap ``AVX512_CORE`` a bf16 linear layer took 2.4x the fp32 time; uncapped, half).
    ``flags=None`` (no /proc/cpuinfo, e.g. macOS) gives ``'unknown'`` rather than a guess.

    Args:
        flags: The CPU's flags (:func:`parse_cpuinfo`).
        isa_cap: oneDNN's ISA cap (``ONEDNN_MAX_CPU_ISA``) if set: it can rule AMX or
            AVX512-BF16 out on a CPU that has them.
    """
    if flags is None:
        return 'unknown'
    if {'amx_bf16', 'amx_tile'} <= set(flags):
        found = 'amx'
    elif 'avx512_bf16' in flags:
        found = 'avx512_bf16'
    else:
        found = 'none'
    return min(found, _isa_cap_limit(isa_cap), key=FAST_PATHS.index)


def onednn_version() -> Optional[str]:
    """The oneDNN (MKL-DNN) version torch was built with, None without oneDNN."""
    if not torch.backends.mkldnn.is_available():
        return None
    found = re.search(r'(?:MKL-DNN|oneDNN)\D*v?(\d+(?:\.\d+)+)', torch.__config__.show())
    return found.group(1) if found else 'unknown'


def describe_gpus() -> Optional[dict]:
    """Count, names, compute capabilities and memory of the CUDA GPUs; None without CUDA."""
    if not torch.cuda.is_available():
        return None
    devices = []
    for index in range(torch.cuda.device_count()):
        properties = torch.cuda.get_device_properties(index)
        devices.append(dict(name=properties.name,
                            capability=f'{properties.major}.{properties.minor}',
                            memory_gb=round(properties.total_memory / 2**30, 1)))
    return dict(count=len(devices), devices=devices, cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version())


def describe_hardware(cpuinfo: Optional[str] = None) -> dict:
    """The machine a benchmark runs on, as recorded with every result.

    Args:
        cpuinfo: A ``/proc/cpuinfo`` text; None reads this machine's (absent outside Linux:
            model from ``platform``, flags unknown).

    Returns:
        ``cpu``: model, ``logical_cpus`` (os.cpu_count), ``usable_cpus`` (this process's
        affinity), ``physical_cores``, ``torch_threads``, ``torch_capability``
        (``torch.backends.cpu.get_cpu_capability()``: the ATen kernels' vector ISA),
        ``speed_flags`` (the :data:`SPEED_FLAGS` present, None when unknown),
        ``bf16_fast_path`` (:func:`bf16_fast_path`, oneDNN's cap included) and ``isa_cap``
        (the oneDNN caps set in the environment); ``torch`` and ``onednn`` versions;
        ``gpu``: :func:`describe_gpus`.
    """
    if cpuinfo is None:
        try:
            with open('/proc/cpuinfo') as file:
                cpuinfo = file.read()
        except OSError:
            cpuinfo = ''
    parsed = parse_cpuinfo(cpuinfo)
    flags = (None if parsed['flags'] is None else
             [flag for flag in SPEED_FLAGS if flag in parsed['flags']])
    model = parsed['model'] or platform.processor() or platform.machine() or 'unknown'
    isa_cap = {name: os.environ[name] for name in ISA_CAP_VARIABLES if name in os.environ}
    usable = (len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else
              os.cpu_count())
    cpu = dict(model=model, logical_cpus=os.cpu_count(), usable_cpus=usable,
               physical_cores=parsed['physical_cores'], torch_threads=torch.get_num_threads(),
               torch_capability=torch.backends.cpu.get_cpu_capability(), speed_flags=flags,
               bf16_fast_path=bf16_fast_path(flags, next(iter(isa_cap.values()), None)),
               isa_cap=isa_cap)
    return dict(cpu=cpu, torch=torch.__version__, onednn=onednn_version(), gpu=describe_gpus())


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def format_hardware(hardware: dict) -> str:
    """One line with everything :func:`describe_hardware` recorded."""
    cpu = hardware['cpu']
    flags = 'unknown' if cpu['speed_flags'] is None else ' '.join(cpu['speed_flags']) or 'none'
    known = cpu['speed_flags'] is not None
    amx = ' (no AMX)' if known and 'amx_bf16' not in cpu['speed_flags'] else ''
    cap = ''.join(f', oneDNN capped by {name}={value}' for name, value in cpu['isa_cap'].items())
    cores = (f", {cpu['physical_cores']} physical cores" if cpu['physical_cores'] else '')
    text = (f"CPU {cpu['model']}: {cpu['logical_cpus']} logical CPUs ({cpu['usable_cpus']} "
            f"usable{cores}), {_plural(cpu['torch_threads'], 'torch thread')}; torch CPU "
            f"capability {cpu['torch_capability']}; bf16/fp16 flags: {flags}; bf16 fast path: "
            f"{cpu['bf16_fast_path']}{amx}{cap}; torch {hardware['torch']}, oneDNN "
            f"{hardware['onednn']}; GPU: ")
    gpu = hardware['gpu']
    if gpu is None:
        return text + 'none'
    devices = ', '.join(f"{d['name']} (capability {d['capability']}, {d['memory_gb']} GB)"
                        for d in gpu['devices'])
    return text + f"{gpu['count']}: {devices}; CUDA {gpu['cuda']}, cuDNN {gpu['cudnn']}"


def _cuda_index(device: str) -> int:
    device = torch.device(device)
    return device.index if device.index is not None else 0


def hardware_tag(hardware: dict, device: str) -> str:
    """A short name of the hardware a result ran on (one table cell)."""
    if torch.device(device).type == 'cuda' and hardware['gpu'] is not None:
        gpu = hardware['gpu']['devices'][_cuda_index(device)]
        return f"{gpu['name']} (sm {gpu['capability']})"
    cpu = hardware['cpu']
    return (f"{cpu['model']}, {cpu['torch_threads']}t, {cpu['torch_capability']}, "
            f"bf16 path {cpu['bf16_fast_path']}")


def dtype_note(hardware: dict, device: str, dtype: str) -> Optional[str]:
    """What the hardware means for an AMP figure: the fast path it had or that it lacked.

    Args:
        hardware: A :func:`describe_hardware` record.
        device: The device the figure was measured on.
        dtype: ``'fp32'``, ``'bf16'`` or ``'fp16'``.

    Returns:
        A note for the report (None for fp32 and for GPUs with native support).
    """
    if dtype == 'fp32':
        return None
    if torch.device(device).type == 'cuda':
        if hardware['gpu'] is None:
            return None
        major = int(hardware['gpu']['devices'][_cuda_index(device)]['capability'].split('.')[0])
        if dtype == 'bf16' and major < 8:
            return 'bf16 on a GPU before sm 8.0 (no native bf16): slower than fp16 expected'
        return None
    cpu = hardware['cpu']
    capability = f"torch CPU capability {cpu['torch_capability']}"
    capped = ''.join(f', {name}={value}' for name, value in cpu['isa_cap'].items())
    if cpu['speed_flags'] is None:
        return f'{dtype} fast path unknown (no CPU flags to read; {capability})'
    if dtype == 'fp16':
        flags = cpu['speed_flags']
        if 'amx_fp16' in flags:
            return f'fp16 on AMX-FP16 ({capability}{capped})'
        if 'avx512_fp16' in flags:
            return (f'fp16 without AMX-FP16 (avx512_fp16 only; {capability}{capped}): no '
                    'faster than fp32 expected')
        return (f'fp16 without AMX-FP16 or avx512_fp16 (emulated; {capability}{capped}): '
                'slower than fp32 expected')
    path = cpu['bf16_fast_path']
    if path == 'amx':
        return f'bf16 on AMX ({capability}{capped})'
    if path == 'avx512_bf16':
        # Measured about 2x faster than fp32 on an AMD EPYC; issue 15 reports a CPU listing
        # avx512_bf16 where bf16 ran 1.6x slower, as emulated bf16 does: the flag alone
        # promises nothing.
        return (f'bf16 without AMX (avx512_bf16 only; {capability}{capped}): AMX speed-ups '
                'do not apply')
    return (f'bf16 without AMX or avx512_bf16 (emulated; {capability}{capped}): slower than '
            'fp32 expected')
