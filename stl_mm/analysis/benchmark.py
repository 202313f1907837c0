"""Throughput, latency and peak memory of FAN and the STL training modes.

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

Every result records the hardware it ran on (:func:`stl_mm.analysis.hardware.describe_hardware`:
CPU model, threads, torch's CPU capability, the bf16 fast path, GPU), because an AMP speed-up
depends on it. bf16 inference ran 2.07x faster than fp32 on a Xeon with AMX, about 2x on an
AMD EPYC with AVX512-BF16 but no AMX, and 1.6x slower than fp32 where bf16 is emulated.

The command line is ``tools/analysis_tools/benchmark.py``; :func:`run_benchmark` is the
entry point for code.
"""
import contextlib
import copy
import itertools
import json
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from .hardware import describe_hardware

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


@dataclass(frozen=True)
class BenchmarkOptions:
    """What every setting of one run shares.

    Args:
        arch: FAN preset name or arch dict of the student (ignored with ``config``).
        config: A classifier config file whose model is measured instead of ``arch``.
        img_size: Input (height, width).
        num_classes: Classes of the ``arch`` classifier.
        drop_path_rate: Stochastic depth of the ``arch`` student (the configs use 0.05).
        warmup: Untimed steps before the timed ones (compilation happens there).
        repeats: Timed steps.
        device: ``'cpu'`` or ``'cuda'``.
        threads: torch CPU threads (None: torch's default).
    """
    arch: Optional[Union[str, dict]] = 't-hybrid'
    config: Optional[str] = None
    img_size: Tuple[int, int] = (224, 224)
    num_classes: int = 1000
    drop_path_rate: float = 0.05
    warmup: int = 2
    repeats: int = 5
    device: str = field(default_factory=lambda: 'cuda' if torch.cuda.is_available() else 'cpu')
    threads: Optional[int] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, 'img_size', tuple(self.img_size))
        if len(self.img_size) != 2 or min(self.img_size) <= 0:
            raise ValueError(f'img_size must be a positive (height, width), got {self.img_size} '
                             '(--img-size takes one side or a height and a width).')
        if self.repeats <= 0 or self.warmup < 0:
            raise ValueError(f'repeats must be positive and warmup non-negative, got '
                             f'repeats={self.repeats}, warmup={self.warmup}.')
        if self.arch is None and self.config is None:
            raise ValueError('Give a FAN arch (--arch) or a classifier config (--config).')
        if torch.device(self.device).type == 'cuda' and not torch.cuda.is_available():
            raise ValueError('--device cuda was asked for, but torch sees no CUDA device; '
                             'run on a GPU machine or pass --device cpu.')


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
    return dict(
        type='TokenLabelingClassifier',
        mode=mode,
        backbone=dict(type='FAN', arch=arch, drop_path_rate=drop_path_rate),
        head=dict(type='TokenLabelingHead', num_classes=num_classes,
                  with_token_head=mode != 'plain'))


class ModelSource:
    """Builds the student / teacher models of every setting from an arch or a config file."""

    def __init__(self, options: BenchmarkOptions) -> None:
        self.arch = options.arch
        self.num_classes = options.num_classes
        self.drop_path_rate = options.drop_path_rate
        self.config_model: Optional[dict] = None
        self.config_teacher: Optional[dict] = None
        if options.config:
            self._read_config(options.config)

    def _read_config(self, path: str) -> None:
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
                    raise ValueError("teacher 'same' with a config (--teacher-arch same "
                                     '--config) needs a FrozenTeacherHook in the config; name '
                                     'a FAN arch instead.')
                return copy.deepcopy(self.config_teacher)
            return classifier_cfg(self.arch, 'labeler', self.num_classes, 0.)
        num_classes = (self.config_model['head']['num_classes']
                       if self.config_model is not None else self.num_classes)
        return classifier_cfg(parse_arch(teacher), 'labeler', num_classes, 0.)


def build_model(cfg: dict) -> nn.Module:
    """Build and initialise a model config, without the per-parameter init log."""
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.ERROR)  # init_weights logs one line per parameter
    try:
        model = MODELS.build(cfg)
        model.init_weights()
    finally:
        logger.setLevel(level)
    return model


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
    """Wait for the device's queued work (CUDA); nothing to wait for on CPU."""
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
    """Median, quartiles, extremes and images/s of the timed calls (milliseconds)."""
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
    """Student images, teacher images and labelled data samples (seeded random tensors)."""
    generator = torch.Generator().manual_seed(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def images() -> torch.Tensor:
        return torch.randn(batch_size, 3, *image_size, generator=generator).to(
            device, memory_format=memory_format)

    labels = torch.randint(num_classes, (batch_size, ), generator=generator)
    samples = [DataSample().set_gt_label(int(label)).to(device) for label in labels]
    return images(), images(), samples


def run_setting(setting: Setting, source: ModelSource, options: BenchmarkOptions) -> dict:
    """Measure one setting; errors are recorded, not raised."""
    result = dict(asdict(setting), status='ok')
    try:
        result.update(_measure(setting, source, options))
    except Exception as error:  # report and carry on with the other settings
        result['status'] = f'error: {type(error).__name__}: {str(error).splitlines()[0][:300]}'
    return result


def _measure(setting: Setting, source: ModelSource, options: BenchmarkOptions) -> dict:
    device = torch.device(options.device)
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
    images, teacher_images, samples = make_batch(setting.batch_size, options.img_size, num_classes,
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
            times, cpu_times, warmup_s = time_calls(step, device, options.warmup,
                                                    options.repeats)
        measured.update(summarize(times, cpu_times, setting.batch_size), warmup_s=warmup_s)
        if device.type == 'cuda':
            measured['cuda_peak_allocated_mb'] = torch.cuda.max_memory_allocated(device) / 2**20
        else:
            measured['rss_start_mb'] = sampler.start / 2**20
            measured['rss_peak_mb'] = sampler.peak / 2**20
            measured['rss_rise_mb'] = (sampler.peak - sampler.start) / 2**20
        if teacher is not None:
            measured['teacher_forward'] = _time_teacher(model, teacher_images, autocast, device,
                                                        options.repeats)
    measured['params_m'] = sum(p.numel() for p in model.parameters()) / 1e6
    return measured


def _time_teacher(model: nn.Module, teacher_images: torch.Tensor, autocast: Callable,
                  device: torch.device, repeats: int) -> dict:
    """The teacher's part of a student step, timed alone, exactly as the classifier runs it."""

    def forward() -> None:
        with autocast():
            logits = model.teacher_token_logits(teacher_images)
        if logits.requires_grad or logits.grad_fn is not None:
            raise RuntimeError('The teacher output carries autograd state.')

    times, cpu_times, _ = time_calls(forward, device, 1, repeats)
    summary = summarize(times, cpu_times, teacher_images.shape[0])
    return {key: summary[key] for key in ('median_ms', 'q1_ms', 'q3_ms', 'cpu_median_ms')}


def attention_parity(options: BenchmarkOptions) -> float:
    """Max |difference| of float32 inference outputs between the two attention paths."""
    source, device = ModelSource(options), torch.device(options.device)
    torch.manual_seed(0)
    model = build_model(source.student_cfg('inference', False)).to(device).eval()
    images = torch.randn(2, 3, *options.img_size, device=device)
    with torch_threads(options.threads), torch.inference_mode():
        reference = model(images)
        with attention_implementation('math'):
            swapped = model(images)
    return (reference - swapped).abs().max().item()


def expand_settings(workloads: Sequence[str], batch_sizes: Sequence[int],
                    dtypes: Sequence[str], channels_last: Sequence[bool],
                    compiled: Sequence[bool], attention: Sequence[str], with_cp: Sequence[bool],
                    teachers: Sequence[str]) -> List[Setting]:
    """Every combination of the given values (``teachers`` only for the student workload).

    Inference skips ``with_cp=True``: activation checkpointing only acts in training.
    """
    unknown = [name for name in workloads if name not in WORKLOADS]
    unknown += [name for name in dtypes if name not in DTYPES]
    unknown += [name for name in attention if name not in ATTENTIONS]
    if unknown:
        raise ValueError(f'Unknown values {unknown}: workloads are {WORKLOADS}, dtypes '
                         f'{tuple(DTYPES)}, attention {ATTENTIONS}.')
    if min(batch_sizes) <= 0:
        raise ValueError(f'Batch sizes must be positive, got {list(batch_sizes)}.')
    settings = []
    for workload, batch_size, dtype, last, compile_on, attn, cp in itertools.product(
            workloads, batch_sizes, dtypes, channels_last, compiled, attention, with_cp):
        if workload == 'inference' and cp:
            continue
        for teacher in (teachers if workload == 'student' else [None]):
            settings.append(Setting(workload, batch_size, dtype, bool(last), bool(compile_on),
                                    attn, bool(cp), teacher))
    return settings


@contextlib.contextmanager
def torch_threads(threads: Optional[int]) -> Iterator[None]:
    """Run the block with ``threads`` torch CPU threads (None: unchanged), then restore."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_benchmark(options: BenchmarkOptions,
                  settings: Sequence[Setting],
                  isolate: bool = False,
                  on_result: Optional[Callable[[dict], None]] = None) -> List[dict]:
    """Measure every setting; a failing setting is recorded (``status``), not raised.

    Args:
        options: What the settings share.
        settings: The settings, measured in order.
        isolate: Run every setting in a fresh interpreter (clean RSS and allocator state).
        on_result: Called with each result as soon as it is measured (progress output).

    Returns:
        One dict per setting: the setting's fields, ``status`` (``'ok'`` or the error), the
        figures of :func:`summarize` plus memory, ``params_m`` and ``teacher_forward``, the
        ``device`` and the ``hardware`` it ran on
        (:func:`stl_mm.analysis.hardware.describe_hardware`: a speed-up holds only there).
    """
    source = None if isolate else ModelSource(options)
    results = []
    with torch_threads(options.threads):
        hardware = describe_hardware()
        for setting in settings:
            result = (run_isolated(setting, options)
                      if isolate else run_setting(setting, source, options))
            result.update(device=options.device, hardware=hardware)
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


def run_isolated(setting: Setting, options: BenchmarkOptions) -> dict:
    """Run one setting in a fresh interpreter (``python -m stl_mm.analysis.benchmark``)."""
    job = json.dumps(dict(options=asdict(options), setting=asdict(setting)))
    completed = subprocess.run([sys.executable, '-m', __spec__.name, job], capture_output=True,
                               text=True)
    for line in completed.stdout.splitlines():
        if line.startswith(WORKER_MARK):
            return json.loads(line[len(WORKER_MARK):])
    tail = (completed.stderr or completed.stdout).strip().splitlines()[-1:] or ['no output']
    return dict(asdict(setting), status=f'error: worker exited {completed.returncode}: {tail[0]}')


def _run_worker(job: str) -> None:
    """The fresh interpreter of :func:`run_isolated`: measure, print the marked result."""
    job = json.loads(job)
    options, setting = BenchmarkOptions(**job['options']), Setting(**job['setting'])
    with torch_threads(options.threads):
        result = run_setting(setting, ModelSource(options), options)
    print(WORKER_MARK + json.dumps(result))


if __name__ == '__main__':
    _run_worker(sys.argv[1])
