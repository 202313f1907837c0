"""Train any stl_mm config (mmpretrain, mmseg or mmdet: the config's ``default_scope`` decides).

``load_from`` (start from a checkpoint, ours or official) is loaded strictly, EMA weights
first; to fine-tune with keys that differ on purpose (a new head), name them with
``load_from_reinit``: they keep their initial values and the log lists them.

Examples:
    python tools/train.py configs/stl/fan_b_token_labeler.py
    python tools/train.py CONFIG --resume                  # resume from the latest checkpoint
    python tools/train.py CONFIG --resume-if-possible      # resume if there is one, else start
    python tools/train.py CONFIG --resume PATH --amp --cfg-options train_dataloader.batch_size=64
    python tools/train.py CONFIG --cfg-options load_from=PATH load_from_reinit=head.
"""
import argparse

import stl_mm  # noqa: F401  (registers every module before the config is read)
from stl_mm.engine.runner_setup import (DictAction, NothingToResumeError, add_launcher_arguments,
                                        build_runner, close_distributed, parse_launcher_env,
                                        prepare_config, set_resume)
from stl_mm.models.backbones.fan_checkpoint import CheckpointError


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file path')
    parser.add_argument('--work-dir', help='where logs and checkpoints go')
    parser.add_argument(
        '--resume', nargs='?', const='auto', default=None,
        help='resume training: alone, from the latest checkpoint in the work dir; '
        'with a path, from that checkpoint. Stops when there is nothing to resume')
    parser.add_argument(
        '--resume-if-possible', action='store_true',
        help='resume from the latest checkpoint in the work dir when there is one, else start '
        'fresh (for jobs restarted after preemption)')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision (CUDA)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. optim_wrapper.optimizer.lr=1e-3')
    add_launcher_arguments(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    parse_launcher_env(args.local_rank)
    cfg = prepare_config(args.config, args.work_dir, args.cfg_options, args.launcher, args.amp)
    try:
        set_resume(cfg, args.resume, args.resume_if_possible)
        build_runner(cfg).train()
    except (CheckpointError, NothingToResumeError, FloatingPointError) as error:
        raise SystemExit(f'tools/train.py: {error}')


if __name__ == '__main__':
    main()
    close_distributed()
