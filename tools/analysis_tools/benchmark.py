r"""Benchmark FAN and the STL training modes: throughput, latency and peak memory.

Measures, for a FAN preset (``--arch``) or any classifier config (``--config``), the
``inference`` forward pass and the ``plain`` / ``labeler`` / ``student`` training steps
(the student step includes the frozen teacher's forward pass, ``--teacher-arch``) over the
product of batch sizes, dtypes, channels-last, ``torch.compile``, attention implementation
and activation checkpointing. :mod:`stl_mm.analysis.benchmark` explains every figure. Every
result records the hardware it ran on (CPU model, threads, torch's CPU capability, the bf16
fast path: AMX, AVX512-BF16 or none, and the GPU), and the table prints it with each row: a
bf16 speed-up measured with AMX does not hold on a CPU without it.

Examples::

    # CPU: inference and the three training steps of FAN-T-Hybrid at 224, batch 8
    python tools/analysis_tools/benchmark.py --arch t-hybrid --batch-sizes 8 \
        --workloads inference plain labeler student --out work_dirs/bench/cpu.json
    # activation checkpointing, one fresh process per setting for honest RSS figures
    python tools/analysis_tools/benchmark.py --arch t-hybrid --batch-sizes 16 \
        --workloads plain --with-cp 0 1 --isolate
    # GPU, bf16: FAN-B-Hybrid training images/s and memory at batch 64 and 128
    python tools/analysis_tools/benchmark.py --arch b-hybrid --device cuda --dtypes bf16 \
        --batch-sizes 64 128 --workloads inference plain student --out b_hybrid_gpu.json
    # a second run into the same file (refused unless on the same hardware and settings)
    python tools/analysis_tools/benchmark.py --arch b-hybrid --device cuda --dtypes bf16 \
        --batch-sizes 64 --workloads inference --compile 0 1 --out b_hybrid_gpu.json --append
    # any classifier config (its own model; 'student' takes the teacher of its
    # FrozenTeacherHook, randomly initialised)
    python tools/analysis_tools/benchmark.py --config configs/stl/fan_t_student.py \
        --workloads student
"""
import argparse
import os
import sys
from typing import List, Optional

import torch

from stl_mm.analysis.benchmark import (ATTENTIONS, DTYPES, WORKLOADS, BenchmarkOptions,
                                       attention_parity, expand_settings, parse_arch,
                                       run_benchmark, torch_threads)
from stl_mm.analysis.benchmark_report import (comparisons, describe_machine,
                                              format_comparisons, format_table, machine_info,
                                              read_for_append, shared_settings, write_report)
from stl_mm.analysis.hardware import describe_hardware


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Throughput, latency and peak memory of FAN and the STL training steps.',
        epilog=__doc__[__doc__.index('Examples::'):],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument('--arch', help='FAN preset name or arch dict as JSON (default '
                        't-hybrid)')
    source.add_argument('--config', help='a classifier config file instead of --arch')
    parser.add_argument('--workloads', nargs='+', choices=WORKLOADS, default=list(WORKLOADS))
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
    parser.add_argument('--out', help='write the results as JSON here (replacing the file)')
    parser.add_argument('--append', action='store_true',
                        help='add this run to the --out file instead of replacing it; refused '
                        'when that file was measured on other hardware or with other shared '
                        'settings')
    args = parser.parse_args(argv)
    if len(args.img_size) == 1:
        args.img_size = args.img_size * 2
    try:
        args.options = BenchmarkOptions(
            arch=None if args.config else parse_arch(args.arch or 't-hybrid'),
            config=args.config, img_size=args.img_size, num_classes=args.num_classes,
            drop_path_rate=args.drop_path_rate, warmup=args.warmup, repeats=args.repeats,
            device=args.device, threads=args.threads)
        args.settings = expand_settings(args.workloads, args.batch_sizes, args.dtypes,
                                        args.channels_last, args.compile, args.attention,
                                        args.with_cp, args.teacher_arch)
    except ValueError as error:
        parser.error(str(error))
    with torch_threads(args.options.threads):
        args.hardware = describe_hardware()
    if args.append:
        if not args.out:
            parser.error('--append adds to the --out file; name it with --out.')
        try:
            read_for_append(args.out, args.hardware, shared_settings(args.options))
        except ValueError as error:
            parser.error(str(error))
    return args


def main(argv: Optional[List[str]] = None) -> List[dict]:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    options = args.options
    with torch_threads(options.threads):
        info = machine_info(options.device)
        print(describe_machine(args.hardware, info, len(args.settings)))
        if 'math' in args.attention:
            info['attention_max_abs_diff_fp32'] = attention_parity(options)
            print('sdpa vs math attention, float32 outputs: max |diff| = '
                  f"{info['attention_max_abs_diff_fp32']:.2e}")
        results = run_benchmark(
            options, args.settings, isolate=args.isolate,
            on_result=lambda result: print(format_table([result]).splitlines()[-1], flush=True))
        info['load_average_after'] = os.getloadavg()
        found = comparisons(results)
        print('\n' + format_table(results))
        if found:
            print('\n' + format_comparisons(found))
        if args.out:
            report = write_report(args.out, ['tools/analysis_tools/benchmark.py', *argv], info,
                                  args.hardware, options, args.isolate, results, found,
                                  append=args.append)
            print(f"\nwrote {args.out}: run {len(report['runs'])}, "
                  f"{len(report['results'])} results")
    return results


if __name__ == '__main__':
    main()
