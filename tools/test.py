"""Test a checkpoint with any stl_mm config (the config's ``default_scope`` decides the codebase).

Official FAN/STL checkpoints are accepted directly: they are converted once (EMA weights when
present) into the work directory before testing.

Example:
    python tools/test.py configs/fan/fan_b_hybrid_in1k.py work_dirs/fan_b_hybrid_in1k/epoch_350.pth
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import stl_mm  # noqa: E402,F401  (registers every module before the config is read)
from stl_mm.engine.runner_setup import (DictAction, add_launcher_arguments,  # noqa: E402
                                        build_test_runner, close_distributed,
                                        parse_launcher_env, prepare_config)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file (ours or official FAN/STL)')
    parser.add_argument('--work-dir', help='where logs and results go')
    parser.add_argument('--no-ema', action='store_true',
                        help='for official checkpoints: use the raw weights, not the EMA ones')
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
    build_test_runner(cfg, args.checkpoint, not args.no_ema).test()


if __name__ == '__main__':
    main()
    close_distributed()
