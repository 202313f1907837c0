"""Train any stl_mm config (mmpretrain, mmseg or mmdet: the config's ``default_scope`` decides).

Examples:
    python tools/train.py configs/stl/fan_b_token_labeler.py
    python tools/train.py CONFIG --resume                  # resume from the latest checkpoint
    python tools/train.py CONFIG --resume PATH --amp --cfg-options train_dataloader.batch_size=64
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import stl_mm  # noqa: E402,F401  (registers every module before the config is read)
from stl_mm.engine.runner_setup import (DictAction, add_launcher_arguments,  # noqa: E402
                                        build_runner, close_distributed, parse_launcher_env,
                                        prepare_config)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file path')
    parser.add_argument('--work-dir', help='where logs and checkpoints go')
    parser.add_argument(
        '--resume', nargs='?', const='auto', default=None,
        help='resume training: alone, from the latest checkpoint in the work dir; '
        'with a path, from that checkpoint')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision (CUDA)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. optim_wrapper.optimizer.lr=1e-3')
    add_launcher_arguments(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    parse_launcher_env(args.local_rank)
    cfg = prepare_config(args.config, args.work_dir, args.cfg_options, args.launcher, args.amp)
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    build_runner(cfg).train()


if __name__ == '__main__':
    main()
    close_distributed()
