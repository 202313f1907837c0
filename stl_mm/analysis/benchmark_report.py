"""Tables, comparisons and the JSON results file of :mod:`stl_mm.analysis.benchmark`.

A results file is JSON::

    {"format": "stl_mm.benchmark/1",
     "hardware": {...},   # describe_hardware(): CPU, bf16 fast path, torch threads, GPU
     "settings": {...},   # what every setting shares: arch / config, img_size, device, ...
     "runs": [{"command": [...], "machine": {...}, "isolate": bool}],
     "results": [{<setting>, "run": i, "device": ..., "hardware": {...}, <figures>}],
     "comparisons": [{..., "run": i}]}

A speed-up holds on the hardware that measured it, so every result carries that hardware
and the table prints it with each row. ``--append`` adds a run to an existing file only when
its hardware and shared settings are identical; a file of another machine, of other
settings or without a hardware record is refused with the keys that differ, so figures of
two machines never mix in one file. Comparisons pair settings of one run only (wall time
moves with the machine's load between runs).
"""
import json
import os
import os.path as osp
import platform
import subprocess
from dataclasses import asdict, fields
from typing import List, Optional, Sequence, Union

import torch

from stl_mm.evaluation.reports import write_json
from stl_mm.utils import json_differences, json_sha256, read_results_json
from .benchmark import BenchmarkOptions, Setting, teacher_label
from .hardware import dtype_note, format_hardware, hardware_tag

RESULTS_FORMAT = 'stl_mm.benchmark/1'
SETTING_FIELDS = tuple(field.name for field in fields(Setting))
#: The options of :class:`BenchmarkOptions` that every result of a file shares (threads are
#: part of the hardware record).
SHARED_OPTIONS = ('arch', 'config', 'img_size', 'num_classes', 'drop_path_rate', 'warmup',
                  'repeats', 'device')
FRESH_HINT = 'write this run to another --out, or drop --append to replace the file'


def describe_machine(hardware: dict, info: dict, num_settings: int) -> str:
    """The header of a run: the hardware record, then load and the number of settings."""
    return (f'hardware: {format_hardware(hardware)}\n'
            f"python {info['python']}, device {info['device']}, load average "
            f"{info['load_average'][0]:.2f}; {num_settings} settings.")


def machine_info(device: Union[str, torch.device]) -> dict:
    """What a run adds to the hardware record: Python, device, load average, git commit."""
    device = torch.device(device)
    info = dict(python=platform.python_version(), device=str(device),
                load_average=os.getloadavg())
    try:
        info['git_commit'] = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True,
                                            text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        info['git_commit'] = None
    return info


def shared_settings(options: BenchmarkOptions) -> dict:
    """The options every result of a results file shares (as JSON gives them back)."""
    values = asdict(options)
    return json.loads(json.dumps({key: values[key] for key in SHARED_OPTIONS}))


def memory_mb(result: dict) -> Optional[float]:
    """Peak memory of a result: CUDA allocated on GPU, process RSS on CPU."""
    return result.get('cuda_peak_allocated_mb', result.get('rss_peak_mb'))


def result_note(result: dict) -> str:
    """The hardware's word on a result's AMP dtype ('' for fp32 or a native fast path)."""
    return dtype_note(result['hardware'], result['device'], result['dtype']) or ''


def format_table(results: List[dict]) -> str:
    """Aligned text table of the results, one row per setting, each with its hardware."""
    header = ('workload', 'teacher', 'bs', 'dtype', 'cl', 'compile', 'attn', 'cp', 'median ms',
              'IQR ms', 'min-max ms', 'img/s', 'cpu ms', 'mem MB', 'mem rise MB', 'teacher ms',
              'hardware', 'note')
    rows = []
    for r in results:
        common = (r['workload'], teacher_label(r['teacher']), r['batch_size'], r['dtype'],
                  int(r['channels_last']), int(r['compile']), r['attention'], int(r['with_cp']))
        where = (hardware_tag(r['hardware'], r['device']), result_note(r))
        if r['status'] != 'ok':
            rows.append(common + (r['status'], ) + ('', ) * 7 + where)
            continue
        rise = r.get('rss_rise_mb')
        teacher = r.get('teacher_forward')
        rows.append(common + (
            f"{r['median_ms']:.1f}", f"{r['q1_ms']:.1f}-{r['q3_ms']:.1f}",
            f"{r['min_ms']:.1f}-{r['max_ms']:.1f}", f"{r['images_per_s']:.1f}",
            f"{r['cpu_median_ms']:.1f}",
            f'{memory_mb(r):.0f}', '-' if rise is None else f'{rise:.0f}',
            '-' if teacher is None else f"{teacher['median_ms']:.1f}") + where)
    cells = [header] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(row[i]) for row in cells if i < len(row)) for i in range(len(header))]
    lines = []
    for index, row in enumerate(cells):
        lines.append(' | '.join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if index == 0:
            lines.append('-+-'.join('-' * w for w in widths))
    return '\n'.join(lines)


def _key_without(result: dict, *fields: str) -> tuple:
    """The result's setting without ``fields``, and where it ran: results of two devices or
    two machines are never compared."""
    return tuple((k, result[k]) for k in SETTING_FIELDS if k not in fields) + (
        result['device'], json_sha256(result['hardware']))


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
            if field == 'dtype' and result_note(r):
                entry['note'] = result_note(r)
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
        if c.get('note'):
            line += f" [{c['note']}]"
        lines.append(line)
    return '\n'.join(lines)


def read_for_append(path: str, hardware: dict, settings: dict) -> Optional[dict]:
    """The results file at ``path``, checked for a run on ``hardware`` with ``settings``.

    Args:
        path: The ``--out`` file (None is returned when it does not exist yet).
        hardware: This run's :func:`~stl_mm.analysis.hardware.describe_hardware` record.
        settings: This run's :func:`shared_settings`.

    Raises:
        ValueError: The file is unreadable, not a results file of this format (an older one
            has no hardware record), or was measured on other hardware or with other shared
            settings; the message lists what differs.
    """
    if not osp.exists(path):
        return None
    try:
        saved = read_results_json(path, RESULTS_FORMAT)
    except ValueError as error:
        raise ValueError(f'{error}; files of older versions recorded no hardware with their '
                         f'results, so their figures cannot be told apart by machine; '
                         f'{FRESH_HINT}.')
    current = json.loads(json.dumps(hardware))
    differences = json_differences(saved.get('hardware'), current, 'hardware')
    if differences:
        raise ValueError(
            f'{path} was measured on other hardware, and appending would mix figures of two '
            'machines in one file:\n  ' + '\n  '.join(differences) + f'\n{FRESH_HINT}.')
    differences = json_differences(saved.get('settings'), settings, 'settings')
    if differences:
        raise ValueError(
            f'{path} was measured with other shared settings, which its table would not '
            'show:\n  ' + '\n  '.join(differences) + f'\n{FRESH_HINT}.')
    return saved


def write_report(path: str, command: Sequence[str], machine: dict, hardware: dict,
                 options: BenchmarkOptions, isolate: bool, results: List[dict],
                 found: List[dict], append: bool = False) -> dict:
    """Write the run to the results file (atomically), after the run's earlier ones if
    ``append``.

    Args:
        path: The JSON file.
        command: The command line of the run.
        machine: :func:`machine_info` of the run.
        hardware: The hardware record the results were measured on.
        options: The run's shared options.
        isolate: Whether every setting ran in a fresh process.
        results: The run's results (:func:`~stl_mm.analysis.benchmark.run_benchmark`).
        found: Their :func:`comparisons`.
        append: Add the run to an existing file (:func:`read_for_append` checks it) instead
            of replacing it.

    Returns:
        The file's content.

    Raises:
        ValueError: A result was measured on other hardware than ``hardware``, or the file
            to append to does not match (:func:`read_for_append`).
    """
    current = json.loads(json.dumps(hardware))
    for result in results:
        if json.loads(json.dumps(result['hardware'])) != current:
            raise ValueError('A result was measured on other hardware than the results file '
                             'records; results of one machine go in one file.')
    settings = shared_settings(options)
    report = read_for_append(path, hardware, settings) if append else None
    if report is None:
        report = dict(format=RESULTS_FORMAT, hardware=hardware, settings=settings, runs=[],
                      results=[], comparisons=[])
    run = len(report['runs'])
    report['runs'].append(dict(command=list(command), machine=machine, isolate=isolate))
    report['results'] += [dict(result, run=run) for result in results]
    report['comparisons'] += [dict(entry, run=run) for entry in found]
    write_json(report, path, indent=1)
    return report
