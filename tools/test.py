"""Test a checkpoint with any stl_mm config (the config's ``default_scope`` decides the codebase).

The checkpoint (ours, or an official FAN/STL one, converted in memory) is loaded strictly: one
that does not fit the config stops with an error naming the keys, their shapes and the preset
the file looks like. EMA weights are used when the file holds them, unless ``--no-ema``.

Example:
    python tools/test.py configs/fan/fan_b_hybrid_in1k.py work_dirs/fan_b_hybrid_in1k/epoch_350.pth
"""
import argparse

import stl_mm  # noqa: F401  (registers every module before the config is read)
from stl_mm.engine.runner_setup import (DictAction, add_launcher_arguments, build_test_runner,
                                        close_distributed, parse_launcher_env, prepare_config)
from stl_mm.models.backbones.fan_checkpoint import CheckpointError


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file (ours or official FAN/STL)')
    parser.add_argument('--work-dir', help='where logs and results go')
    parser.add_argument('--no-ema', action='store_true',
                        help='use the raw weights of a checkpoint that also holds EMA weights')
    parser.add_argument('--out', help='dump the predictions to this pickle file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    add_launcher_arguments(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    parse_launcher_env(args.local_rank)
    cfg = prepare_config(args.config, args.work_dir, args.cfg_options, args.launcher)
    if args.out:
        cfg.test_evaluator = [*(cfg.test_evaluator if isinstance(cfg.test_evaluator, list)
                                else [cfg.test_evaluator]),
                              dict(type='DumpResults', out_file_path=args.out)]
    try:
        runner = build_test_runner(cfg, args.checkpoint, not args.no_ema)
    except CheckpointError as error:
        raise SystemExit(f'tools/test.py: {error}')
    runner.test()


if __name__ == '__main__':
    main()
    close_distributed()
