"""Benchmark FAN and the STL training modes: throughput, latency and peak memory.

Measures, for a FAN preset (``--arch``) or any classifier config (``--config``):

- ``inference``: ``model(images)`` under ``torch.inference_mode`` (latency per batch and
  images/s);
- ``plain`` / ``labeler`` / ``student``: one training step (forward, loss, backward, AdamW
  step) of the FAN baseline, the STL stage-1 token labeler and the STL stage-2 student. The
  student step includes the frozen teacher's forward pass (``--teacher-arch``: ``same`` or
  any preset / arch dict); its result also gives the teacher's forward time alone.

over the product of batch sizes, dtypes (``fp32``, AMP ``bf16`` / ``fp16``), channels-last,
``torch.compile``, attention implementation (``sdpa``: FAN's
``F.scaled_dot_product_attention``; ``math``: the explicit matmul-softmax-matmul it
replaces, swapped in by :func:`attention_implementation`) and activation checkpointing
(``with_cp``). Each setting runs ``--warmup`` untimed steps (compilation happens there), then
``--repeats`` timed steps; the table shows the median, the interquartile range and min/max.
Images are random tensors fed to the model directly: data loading, the data preprocessor and
Mixup / CutMix are not measured.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over the timed steps (weights,
optimizer state and activations; not the allocator's cache). On CPU there is no allocator
counter; the tool samples the process resident set size (RSS, /proc/self/statm) every 2 ms
during warm-up and timed steps and reports the high-water mark and its rise over the RSS
just before the first step. RSS counts every page the process holds (Python, libraries,
weights, memory the C allocator kept from earlier settings), so the rise is only comparable
between settings run alike: pass ``--isolate`` to run every setting in a fresh process.

Examples::

    # CPU: inference and the three training steps of FAN-T-Hybrid at 224, batch 8
    python tools/benchmark.py --arch t-hybrid --batch-sizes 8 \
        --workloads inference plain labeler student --out work_dirs/bench/cpu.json
    # activation checkpointing, one fresh process per setting for honest RSS figures
    python tools/benchmark.py --arch t-hybrid --batch-sizes 16 --workloads plain \
        --with-cp 0 1 --isolate
    # GPU, bf16: FAN-B-Hybrid training images/s and memory at batch 64 and 128
    python tools/benchmark.py --arch b-hybrid --device cuda --dtypes bf16 \
        --batch-sizes 64 128 --workloads inference plain student --out b_hybrid_gpu.json
    # any classifier config (its own model; 'student' takes the teacher of its
    # FrozenTeacherHook, randomly initialised)
    python tools/benchmark.py --config configs/stl/fan_t_student.py --workloads student
"""
import argparse
import contextlib
import copy
import itertools
import json
import logging
import os
import os.path as osp
import platform
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

WORKLOADS = ('inference', 'plain', 'labeler', 'student')
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
ATTENTIONS = ('sdpa', 'math')
WORKER_MARK = '@@benchmark-result@@'


@dataclass(frozen=True)
class Setting:
    """One measured configuration."""
    workload: str
    batch_size: int
    dtype: str
    channels_last: bool
    compile: bool
    attention: str
    with_cp: bool
    teacher: Optional[str]  # teacher arch name (student workload only)


# ---------------------------------------------------------------------- attention swap
def math_attention(query: torch.Tensor,
                   key: torch.Tensor,
                   value: torch.Tensor,
                   attn_mask: Optional[torch.Tensor] = None,
                   dropout_p: float = 0.,
                   is_causal: bool = False,
                   scale: Optional[float] = None,
                   **unsupported) -> torch.Tensor:
    """softmax(q k^T * scale) v written out with matmuls (the pre-SDPA FAN formulation)."""
    if attn_mask is not None or is_causal or unsupported:
        raise NotImplementedError('math_attention covers the unmasked attention FAN uses.')
    scale = query.shape[-1]**-0.5 if scale is None else scale
    weights = (query @ key.transpose(-2, -1) * scale).softmax(dim=-1)
    if dropout_p > 0:
        weights = F.dropout(weights, dropout_p)
    return weights @ value


@contextlib.contextmanager
def attention_implementation(name: str) -> Iterator[None]:
    """Run FAN's attention as ``'sdpa'`` (as written) or as explicit ``'math'``.

    FAN calls ``torch.nn.functional.scaled_dot_product_attention`` at run time, so replacing
    that attribute for the duration of the block swaps the implementation in token mixing
    and class attention without touching the model.
    """
    if name not in ATTENTIONS:
        raise ValueError(f'attention must be one of {ATTENTIONS}, got {name!r}.')
    if name == 'sdpa':
        yield
        return
    original = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = math_attention
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


# ---------------------------------------------------------------------- models
def parse_arch(text: str):
    """A preset name, or an arch dict written as JSON."""
    return json.loads(text) if text.lstrip().startswith('{') else text


def teacher_label(teacher: Optional[str]) -> str:
    """Short table label of a ``--teacher-arch`` entry."""
    if teacher is None:
        return '-'
    arch = parse_arch(teacher)
    if isinstance(arch, str):
        return arch
    return f"custom(depth={arch.get('depth')}, dims={arch.get('embed_dims')})"


def classifier_cfg(arch, mode: str, num_classes: int, drop_path_rate: float) -> dict:
    """A TokenLabelingClassifier config around ``FAN(arch)``, as the configs/ files build."""
    from stl_mm.models.backbones import FAN
    embed_dims = FAN.resolve_arch(arch)['embed_dims'][-1]
    return dict(
        type='TokenLabelingClassifier',
        mode=mode,
        backbone=dict(type='FAN', arch=arch, drop_path_rate=drop_path_rate),
        head=dict(type='TokenLabelingHead', num_classes=num_classes, in_channels=embed_dims,
                  with_token_head=mode != 'plain'))


class ModelSource:
    """Builds the student / teacher models of every setting from ``--arch`` or ``--config``."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.arch = parse_arch(args.arch) if args.arch else None
        self.num_classes = args.num_classes
        self.drop_path_rate = args.drop_path_rate
        self.config_model: Optional[dict] = None
        self.config_teacher: Optional[dict] = None
        if args.config:
            self._read_config(args.config)

    def _read_config(self, path: str) -> None:
        from mmengine.config import Config
        cfg = Config.fromfile(path)
        self.config_model = cfg.model.to_dict() if hasattr(cfg.model, 'to_dict') else dict(
            cfg.model)
        hooks = list((cfg.get('default_hooks') or {}).values()) + list(
            cfg.get('custom_hooks') or [])
        for hook in hooks:
            if isinstance(hook, dict) and hook.get('type') == 'FrozenTeacherHook':
                self.config_teacher = copy.deepcopy(dict(hook['model']))

    def student_cfg(self, workload: str, with_cp: bool) -> dict:
        mode = 'plain' if workload == 'inference' else workload
        if self.config_model is not None:
            cfg = copy.deepcopy(self.config_model)
            if cfg.get('type') == 'TokenLabelingClassifier':
                cfg['mode'] = mode
                if mode != 'plain':
                    cfg['head']['with_token_head'] = True
        else:
            cfg = classifier_cfg(self.arch, mode, self.num_classes, self.drop_path_rate)
        # Batch augments need the data preprocessor's soft targets; the benchmark feeds
        # tensors and hard labels directly.
        cfg.pop('train_cfg', None)
        cfg.pop('data_preprocessor', None)
        cfg['backbone']['with_cp'] = with_cp
        return cfg

    def teacher_cfg(self, teacher: str) -> dict:
        if teacher == 'same':
            if self.config_model is not None:
                if self.config_teacher is None:
                    raise ValueError('--teacher-arch same with --config needs a '
                                     'FrozenTeacherHook in the config; name a FAN arch instead.')
                return copy.deepcopy(self.config_teacher)
            return classifier_cfg(self.arch, 'labeler', self.num_classes, 0.)
        num_classes = (self.config_model['head']['num_classes']
                       if self.config_model is not None else self.num_classes)
        return classifier_cfg(parse_arch(teacher), 'labeler', num_classes, 0.)


def build_model(cfg: dict) -> nn.Module:
    from mmengine.logging import MMLogger
    from mmpretrain.registry import MODELS
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.ERROR)  # init_weights logs one line per parameter
    try:
        model = MODELS.build(cfg)
        model.init_weights()
    finally:
        logger.setLevel(level)
    return model


# ---------------------------------------------------------------------- measurement
class RssSampler:
    """High-water mark of the process RSS, sampled by a background thread (Linux)."""

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self.page_size = os.sysconf('SC_PAGE_SIZE')
        self.peak = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def current(self) -> int:
        with open('/proc/self/statm') as statm:
            return int(statm.read().split()[1]) * self.page_size

    def __enter__(self) -> 'RssSampler':
        self.start = self.peak = self.current()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, self.current())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], None], device: torch.device, warmup: int,
               repeats: int) -> Tuple[List[float], List[float], float]:
    """Wall-clock and process CPU seconds of each timed call, and the warm-up's wall seconds.

    Process CPU time counts all threads of this process; with one torch thread on a shared
    machine it is far less disturbed by other processes than wall time.
    """
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
    synchronize(device)
    warmup_s = time.perf_counter() - start
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    times, cpu_times = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return times, cpu_times, warmup_s


def summarize(times: List[float], cpu_times: List[float], batch_size: int) -> dict:
    ordered = sorted(times)
    quartiles = statistics.quantiles(ordered, n=4, method='inclusive') if len(ordered) > 1 else (
        ordered * 3)
    median = statistics.median(ordered)
    return dict(
        times_ms=[round(t * 1e3, 3) for t in times],
        median_ms=median * 1e3,
        q1_ms=quartiles[0] * 1e3,
        q3_ms=quartiles[2] * 1e3,
        min_ms=ordered[0] * 1e3,
        max_ms=ordered[-1] * 1e3,
        images_per_s=batch_size / median,
        cpu_times_ms=[round(t * 1e3, 3) for t in cpu_times],
        cpu_median_ms=statistics.median(cpu_times) * 1e3)


def make_batch(batch_size: int, image_size: Sequence[int], num_classes: int,
               device: torch.device, channels_last: bool):
    from mmpretrain.structures import DataSample
    generator = torch.Generator().manual_seed(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def images() -> torch.Tensor:
        return torch.randn(batch_size, 3, *image_size, generator=generator).to(
            device, memory_format=memory_format)

    labels = torch.randint(num_classes, (batch_size, ), generator=generator)
    samples = [DataSample().set_gt_label(int(label)).to(device) for label in labels]
    return images(), images(), samples


def run_setting(setting: Setting, source: ModelSource, args: argparse.Namespace,
                device: torch.device) -> dict:
    """Measure one setting; errors are recorded, not raised."""
    result = dict(asdict(setting), status='ok')
    try:
        result.update(_measure(setting, source, args, device))
    except Exception as error:  # report and carry on with the other settings
        result['status'] = f'error: {type(error).__name__}: {str(error).splitlines()[0][:300]}'
    return result


def _measure(setting: Setting, source: ModelSource, args: argparse.Namespace,
             device: torch.device) -> dict:
    torch._dynamo.reset()
    torch.manual_seed(0)
    dtype = DTYPES[setting.dtype]
    use_amp = dtype != torch.float32
    memory_format = torch.channels_last if setting.channels_last else torch.contiguous_format
    model = build_model(source.student_cfg(setting.workload, setting.with_cp))
    model.to(device, memory_format=memory_format)
    teacher = None
    if setting.workload == 'student':
        teacher = build_model(source.teacher_cfg(setting.teacher))
        teacher.requires_grad_(False)
        teacher.to(device, memory_format=memory_format)
        model.set_teacher(teacher)
    if setting.compile:
        model.backbone = torch.compile(model.backbone)
        if teacher is not None:
            teacher.backbone = torch.compile(teacher.backbone)
    num_classes = model.head.num_classes
    images, teacher_images, samples = make_batch(setting.batch_size, args.img_size, num_classes,
                                                 device, setting.channels_last)

    def autocast():
        return torch.autocast(device.type, dtype=dtype, enabled=use_amp)

    if setting.workload == 'inference':
        model.eval()

        def step() -> None:
            with torch.inference_mode(), autocast():
                model(images)
    else:
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        extra = dict(teacher_inputs=teacher_images) if teacher is not None else {}

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                losses = model.loss(images, samples, **extra)
            loss = sum(value for key, value in losses.items() if key.startswith('loss'))
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    measured = {}
    with attention_implementation(setting.attention):
        sampler = RssSampler() if device.type == 'cpu' else contextlib.nullcontext()
        with sampler:
            times, cpu_times, warmup_s = time_calls(step, device, args.warmup, args.repeats)
        measured.update(summarize(times, cpu_times, setting.batch_size), warmup_s=warmup_s)
        if device.type == 'cuda':
            measured['cuda_peak_allocated_mb'] = torch.cuda.max_memory_allocated(device) / 2**20
        else:
            measured['rss_start_mb'] = sampler.start / 2**20
            measured['rss_peak_mb'] = sampler.peak / 2**20
            measured['rss_rise_mb'] = (sampler.peak - sampler.start) / 2**20
        if teacher is not None:
            measured['teacher_forward'] = _time_teacher(model, teacher_images, autocast, device,
                                                        args)
    measured['params_m'] = sum(p.numel() for p in model.parameters()) / 1e6
    return measured


def _time_teacher(model: nn.Module, teacher_images: torch.Tensor, autocast: Callable,
                  device: torch.device, args: argparse.Namespace) -> dict:
    """The teacher's part of a student step, timed alone, exactly as the classifier runs it."""

    def forward() -> None:
        with autocast():
            logits = model.teacher_token_logits(teacher_images)
        if logits.requires_grad or logits.grad_fn is not None:
            raise RuntimeError('The teacher output carries autograd state.')

    times, cpu_times, _ = time_calls(forward, device, 1, args.repeats)
    summary = summarize(times, cpu_times, teacher_images.shape[0])
    return {key: summary[key] for key in ('median_ms', 'q1_ms', 'q3_ms', 'cpu_median_ms')}


# ---------------------------------------------------------------------- reporting
def machine_info(device: torch.device) -> dict:
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
    return result.get('cuda_peak_allocated_mb', result.get('rss_peak_mb'))


def format_table(results: List[dict]) -> str:
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
    return tuple((k, result[k]) for k in Setting.__dataclass_fields__ if k not in fields)


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


def attention_parity(source: ModelSource, args: argparse.Namespace,
                     device: torch.device) -> float:
    """Max |difference| of float32 inference outputs between the two attention paths."""
    torch.manual_seed(0)
    model = build_model(source.student_cfg('inference', False)).to(device).eval()
    images = torch.randn(2, 3, *args.img_size, device=device)
    with torch.inference_mode():
        reference = model(images)[0]
        with attention_implementation('math'):
            swapped = model(images)[0]
    return (reference - swapped).abs().max().item()


# ---------------------------------------------------------------------- driver
def settings_from(args: argparse.Namespace) -> List[Setting]:
    settings = []
    for workload, batch_size, dtype, channels_last, compiled, attention, with_cp in (
            itertools.product(args.workloads, args.batch_sizes, args.dtypes, args.channels_last,
                              args.compile, args.attention, args.with_cp)):
        teachers = args.teacher_arch if workload == 'student' else [None]
        for teacher in teachers:
            if workload == 'inference' and with_cp:
                continue  # checkpointing only acts in training
            settings.append(
                Setting(workload, batch_size, dtype, bool(channels_last), bool(compiled),
                        attention, bool(with_cp), teacher))
    return settings


def run_isolated(setting: Setting, argv: List[str]) -> dict:
    """Run one setting in a fresh interpreter (clean RSS and allocator state)."""
    command = [sys.executable, osp.abspath(__file__), *argv, '--worker-setting',
               json.dumps(asdict(setting))]
    completed = subprocess.run(command, capture_output=True, text=True)
    for line in completed.stdout.splitlines():
        if line.startswith(WORKER_MARK):
            return json.loads(line[len(WORKER_MARK):])
    tail = (completed.stderr or completed.stdout).strip().splitlines()[-1:] or ['no output']
    return dict(asdict(setting), status=f'error: worker exited {completed.returncode}: {tail[0]}')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Throughput, latency and peak memory of FAN and the STL training steps.',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument('--arch', help='FAN preset name or arch dict as JSON (default '
                        't-hybrid)')
    source.add_argument('--config', help='a classifier config file instead of --arch')
    parser.add_argument('--workloads', nargs='+', choices=WORKLOADS,
                        default=['inference', 'plain', 'labeler', 'student'])
    parser.add_argument('--teacher-arch', nargs='+', default=['same'],
                        help="teachers of the student workload: 'same' (the student's arch, or "
                        "the config's FrozenTeacherHook model) and/or FAN presets / JSON dicts")
    parser.add_argument('--batch-sizes', nargs='+', type=int, default=[8])
    parser.add_argument('--img-size', nargs='+', type=int, default=[224],
                        help='input side, or height and width')
    parser.add_argument('--dtypes', nargs='+', choices=sorted(DTYPES), default=['fp32'])
    parser.add_argument('--channels-last', nargs='+', type=int, choices=(0, 1), default=[0])
    parser.add_argument('--compile', nargs='+', type=int, choices=(0, 1), default=[0],
                        help='torch.compile the backbones (student and teacher)')
    parser.add_argument('--attention', nargs='+', choices=ATTENTIONS, default=['sdpa'])
    parser.add_argument('--with-cp', nargs='+', type=int, choices=(0, 1), default=[0])
    parser.add_argument('--num-classes', type=int, default=1000)
    parser.add_argument('--drop-path-rate', type=float, default=0.05,
                        help='stochastic depth of the --arch student (configs use 0.05)')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--threads', type=int, help='torch CPU threads (default: torch)')
    parser.add_argument('--isolate', action='store_true',
                        help='run every setting in a fresh process (honest CPU RSS figures)')
    parser.add_argument('--out', help='write the results as JSON here')
    parser.add_argument('--worker-setting', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.config and not args.arch:
        args.arch = 't-hybrid'
    if len(args.img_size) == 1:
        args.img_size = args.img_size * 2
    if len(args.img_size) != 2 or min(args.img_size) <= 0:
        parser.error('--img-size takes one side or a height and a width, all positive.')
    if min(args.batch_sizes) <= 0 or args.repeats <= 0 or args.warmup < 0:
        parser.error('--batch-sizes and --repeats must be positive, --warmup non-negative.')
    return args


def main(argv: Optional[List[str]] = None) -> List[dict]:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda was asked for, but torch sees no CUDA device; '
                         'run on a GPU machine or pass --device cpu.')
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run(args, argv, device)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, argv: List[str], device: torch.device) -> List[dict]:
    import stl_mm  # noqa: F401  (registers the models)
    source = ModelSource(args)

    if args.worker_setting:
        setting = Setting(**json.loads(args.worker_setting))
        print(WORKER_MARK + json.dumps(run_setting(setting, source, args, device)))
        return []

    info = machine_info(device)
    settings = settings_from(args)
    print(f"torch {info['torch']} on {info['cpu_model']} ({info['logical_cpus']} logical CPUs, "
          f"{info['torch_threads']} threads){', ' + info['gpu'] if 'gpu' in info else ''}; "
          f"load average {info['load_average'][0]:.2f}; {len(settings)} settings.")
    if 'math' in args.attention:
        info['attention_max_abs_diff_fp32'] = attention_parity(source, args, device)
        print(f"sdpa vs math attention, float32 outputs: max |diff| = "
              f"{info['attention_max_abs_diff_fp32']:.2e}")
    worker_argv = [a for a in argv if a != '--isolate']
    results = []
    for setting in settings:
        result = (run_isolated(setting, worker_argv)
                  if args.isolate else run_setting(setting, source, args, device))
        results.append(result)
        print(format_table([result]).splitlines()[-1], flush=True)
    info['load_average_after'] = os.getloadavg()
    found = comparisons(results)
    print('\n' + format_table(results))
    if found:
        print('\n' + format_comparisons(found))
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as handle:
            json.dump(dict(command=['tools/benchmark.py', *argv], machine=info,
                           settings=dict(img_size=args.img_size, warmup=args.warmup,
                                         repeats=args.repeats, isolate=args.isolate,
                                         num_classes=args.num_classes,
                                         arch=args.arch, config=args.config),
                           results=results, comparisons=found), handle, indent=1)
        print(f'\nwrote {args.out}')
    return results


if __name__ == '__main__':
    main()
