"""Tables, comparisons and the JSON report of :mod:`stl_mm.analysis.benchmark` results."""
import json
import os
import os.path as osp
import platform
import subprocess
from dataclasses import asdict, fields
from typing import List, Optional, Sequence, Union

import torch

from .benchmark import BenchmarkOptions, Setting, teacher_label

SETTING_FIELDS = tuple(field.name for field in fields(Setting))


def describe_machine(info: dict, num_settings: int) -> str:
    """The one-line header of a run."""
    gpu = f", {info['gpu']}" if 'gpu' in info else ''
    return (f"torch {info['torch']} on {info['cpu_model']} ({info['logical_cpus']} logical "
            f"CPUs, {info['torch_threads']} threads){gpu}; load average "
            f"{info['load_average'][0]:.2f}; {num_settings} settings.")


def machine_info(device: Union[str, torch.device]) -> dict:
    """Versions, CPU / GPU model, threads, load average and git commit of this run."""
    device = torch.device(device)
    info = dict(
        torch=torch.__version__,
        python=platform.python_version(),
        device=device.type,
        cpu_model=_cpu_model(),
        logical_cpus=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        load_average=os.getloadavg())
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
        info['cuda'] = torch.version.cuda
    try:
        info['git_commit'] = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True,
                                            text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        info['git_commit'] = None
    return info


def _cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as cpuinfo:
            for line in cpuinfo:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def memory_mb(result: dict) -> Optional[float]:
    """Peak memory of a result: CUDA allocated on GPU, process RSS on CPU."""
    return result.get('cuda_peak_allocated_mb', result.get('rss_peak_mb'))


def format_table(results: List[dict]) -> str:
    """Aligned text table of the results, one row per setting."""
    header = ('workload', 'teacher', 'bs', 'dtype', 'cl', 'compile', 'attn', 'cp', 'median ms',
              'IQR ms', 'min-max ms', 'img/s', 'cpu ms', 'mem MB', 'mem rise MB', 'teacher ms')
    rows = []
    for r in results:
        common = (r['workload'], teacher_label(r['teacher']), r['batch_size'], r['dtype'],
                  int(r['channels_last']), int(r['compile']), r['attention'], int(r['with_cp']))
        if r['status'] != 'ok':
            rows.append(common + (r['status'], ) + ('', ) * 7)
            continue
        rise = r.get('rss_rise_mb')
        teacher = r.get('teacher_forward')
        rows.append(common + (
            f"{r['median_ms']:.1f}", f"{r['q1_ms']:.1f}-{r['q3_ms']:.1f}",
            f"{r['min_ms']:.1f}-{r['max_ms']:.1f}", f"{r['images_per_s']:.1f}",
            f"{r['cpu_median_ms']:.1f}",
            f'{memory_mb(r):.0f}', '-' if rise is None else f'{rise:.0f}',
            '-' if teacher is None else f"{teacher['median_ms']:.1f}"))
    cells = [header] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(row[i]) for row in cells if i < len(row)) for i in range(len(header))]
    lines = []
    for index, row in enumerate(cells):
        lines.append(' | '.join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if index == 0:
            lines.append('-+-'.join('-' * w for w in widths))
    return '\n'.join(lines)


def _key_without(result: dict, *fields: str) -> tuple:
    return tuple((k, result[k]) for k in SETTING_FIELDS if k not in fields)


def comparisons(results: List[dict]) -> List[dict]:
    """Ratios between settings that differ in one respect, measured in this run."""
    ok = [r for r in results if r['status'] == 'ok']
    found = []
    # Stage-2 and stage-1 steps against the plain step of the same student.
    plain = {_key_without(r, 'workload', 'teacher'): r for r in ok if r['workload'] == 'plain'}
    for r in ok:
        if r['workload'] in ('labeler', 'student'):
            base = plain.get(_key_without(r, 'workload', 'teacher'))
            if base is not None:
                found.append(
                    dict(kind=f"{r['workload']} / plain step", setting=_describe(r),
                         teacher=r['teacher'], time_ratio=r['median_ms'] / base['median_ms'],
                         cpu_time_ratio=r['cpu_median_ms'] / base['cpu_median_ms'],
                         teacher_share=(r['teacher_forward']['median_ms'] / r['median_ms']
                                        if 'teacher_forward' in r else None),
                         target=1.30 if r['workload'] == 'student' else None))
    pairs = (('attention', 'sdpa', 'math'), ('compile', False, True),
             ('channels_last', False, True), ('with_cp', False, True), ('dtype', 'fp32', 'bf16'),
             ('dtype', 'fp32', 'fp16'))
    for field, first, second in pairs:
        index = {_key_without(r, field): r for r in ok if r[field] == first}
        for r in ok:
            if r[field] != second:
                continue
            base = index.get(_key_without(r, field))
            if base is None:
                continue
            entry = dict(kind=f'{field}: {second} vs {first}', setting=_describe(r),
                         teacher=r['teacher'], time_ratio=r['median_ms'] / base['median_ms'],
                         cpu_time_ratio=r['cpu_median_ms'] / base['cpu_median_ms'],
                         speedup=base['median_ms'] / r['median_ms'])
            if memory_mb(r) is not None and memory_mb(base) is not None:
                entry['peak_memory_mb'] = (memory_mb(base), memory_mb(r))
                if 'rss_rise_mb' in r:
                    entry['rss_rise_mb'] = (base['rss_rise_mb'], r['rss_rise_mb'])
            found.append(entry)
    return found


def _describe(r: dict) -> str:
    return (f"{r['workload']} bs{r['batch_size']} {r['dtype']} cl={int(r['channels_last'])} "
            f"compile={int(r['compile'])} attn={r['attention']} cp={int(r['with_cp'])}")


def format_comparisons(found: List[dict]) -> str:
    """One line per comparison of :func:`comparisons`."""
    lines = []
    for c in found:
        line = (f"{c['kind']:<28} {c['setting']:<60} x{c['time_ratio']:.3f} "
                f"(CPU time x{c['cpu_time_ratio']:.3f})")
        if c.get('teacher'):
            line += f' teacher={teacher_label(c["teacher"])}'
        if c.get('teacher_share') is not None:
            line += f" (teacher forward = {100 * c['teacher_share']:.0f}% of the step)"
        if c.get('target') is not None:
            verdict = 'met' if c['time_ratio'] <= c['target'] else 'NOT met'
            line += f" target <= {c['target']:.2f} (wall time): {verdict}"
        if 'peak_memory_mb' in c:
            line += ' peak mem {:.0f} -> {:.0f} MB'.format(*c['peak_memory_mb'])
        if 'rss_rise_mb' in c:
            line += ' (RSS rise {:.0f} -> {:.0f} MB)'.format(*c['rss_rise_mb'])
        lines.append(line)
    return '\n'.join(lines)


def write_report(path: str, command: Sequence[str], machine: dict, options: BenchmarkOptions,
                 isolate: bool, results: List[dict], found: List[dict]) -> None:
    """Write the run as JSON: command, machine, shared settings, results and comparisons."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    settings = {key: value for key, value in asdict(options).items()
                if key in ('img_size', 'warmup', 'repeats', 'num_classes', 'arch', 'config')}
    with open(path, 'w') as handle:
        json.dump(dict(command=list(command), machine=machine,
                       settings=dict(settings, isolate=isolate), results=results,
                       comparisons=found), handle, indent=1)
