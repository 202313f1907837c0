"""`make demo`: Self-emerging Token Labeling end to end on Fashion-MNIST, on CPU, in minutes.

Trains, through tools/train.py and the configs in configs/stl/demo/, STL stage 1 (a small FAN
token labeler), stage 2 (a student of the same FAN with the frozen stage-1 teacher) and a
baseline without token labels on the same budget; then writes ``report.md``, ``report.json``
and ``token_labels.png`` to the work directory and prints the report: clean and
Fashion-MNIST-C top-1 (15 corruptions x 5 severities), retention, and the teacher's
token-label quality against ground-truth foreground masks (see :mod:`stl_mm.apis.demo`).

Examples:
    python tools/demo.py                       # the full demo (about 11 minutes on 2 idle cores)
    python tools/demo.py --quick               # a half-minute smoke run on tiny subsets
    python tools/demo.py --skip-training       # re-evaluate the checkpoints of an earlier run

A rerun retrains only the stages that did not finish with the same settings (each finished
stage records them in its demo_manifest.json); --skip-training refuses such a stage.

The study (``--study``, see :mod:`stl_mm.apis.demo_study`) trains the paper's ablations at
their demo scale over several seeds and writes study.md, study.json and study.png to
WORK_DIR/study (about an hour on 2 cores); the demo's report then says which of its
differences are within seed noise:
    python tools/demo.py --study --seeds 0 1 2 --jobs 2
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

from stl_mm.apis.demo import (PARALLEL_TRAININGS, DemoStageError, check_seed, demo_sizes,
                              run_demo)
from stl_mm.apis.demo_study import ARM_NAMES, DEFAULT_SEEDS, run_study, study_sizes
from stl_mm.datasets.fashion_mnist import DEFAULT_DATA_DIR


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/demo',
                        help='where the runs, report.md, report.json and the figure go')
    parser.add_argument('--data-dir', default=DEFAULT_DATA_DIR, help='Fashion-MNIST files')
    parser.add_argument('--quick', action='store_true',
                        help='tiny subsets and two epochs: a smoke run of every step')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of training, test subsets, corruptions and Gumbel draws')
    parser.add_argument('--skip-training', action='store_true',
                        help='reuse the stages already in the work directory; refuse one that '
                        'did not finish with these settings')
    parser.add_argument('--train-images', type=int, help='override the training subset size')
    parser.add_argument('--epochs', type=int,
                        help='override the epochs of the student and the baseline')
    parser.add_argument('--teacher-epochs', type=int,
                        help='override the epochs of the stage-1 token labeler')
    study = parser.add_argument_group('study (--study)')
    study.add_argument('--study', action='store_true',
                       help='train and evaluate the ablation arms over --seeds into '
                       'WORK_DIR/study instead of the demo')
    study.add_argument('--seeds', type=int, nargs='+', default=list(DEFAULT_SEEDS),
                       help='seeds of every arm (default: %(default)s)')
    study.add_argument('--arms', nargs='+', default=list(ARM_NAMES), choices=ARM_NAMES,
                       metavar='ARM', help=f'arms to run (default: all of {", ".join(ARM_NAMES)})')
    study.add_argument('--jobs', type=int, default=PARALLEL_TRAININGS,
                       help='trainings side by side, one compute thread each (default: '
                       '%(default)s)')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    command = ' '.join(['python tools/demo.py', *argv])
    try:
        if args.study:
            sizes = study_sizes(args.quick, args.train_images, args.epochs, args.teacher_epochs)
            for seed in args.seeds:
                check_seed(seed)
        else:
            sizes = demo_sizes(args.quick, args.train_images, args.epochs, args.teacher_epochs)
            check_seed(args.seed)
        if args.jobs < 1:
            raise ValueError(f'--jobs must be at least 1, got {args.jobs}.')
    except ValueError as error:
        sys.exit(str(error))
    try:
        if args.study:
            run_study(osp.join(args.work_dir, 'study'), args.data_dir, sizes, args.seeds,
                      args.arms, args.jobs, args.skip_training, command)
        else:
            run_demo(args.work_dir, args.data_dir, sizes, seed=args.seed,
                     skip_training=args.skip_training, quick=args.quick, command=command,
                     jobs=args.jobs)
    except (DemoStageError, ValueError) as error:
        sys.exit(str(error))


if __name__ == '__main__':
    main()
