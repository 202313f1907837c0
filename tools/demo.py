"""`make demo`: Self-emerging Token Labeling end to end on Fashion-MNIST, on CPU, in minutes.

Trains, through tools/train.py and the configs in configs/stl/demo/, STL stage 1 (a small FAN
token labeler), stage 2 (a student of the same FAN with the frozen stage-1 teacher) and a
baseline without token labels on the same budget; then writes ``report.md``, ``report.json``
and ``token_labels.png`` to the work directory and prints the report: clean and
Fashion-MNIST-C top-1 (15 corruptions x 5 severities), retention, and the teacher's
token-label quality against ground-truth foreground masks (see :mod:`stl_mm.apis.demo`).

Examples:
    python tools/demo.py                       # the full demo (about 8 minutes on 2 idle cores)
    python tools/demo.py --quick               # a half-minute smoke run on tiny subsets
    python tools/demo.py --skip-training       # re-evaluate the checkpoints of an earlier run

A rerun retrains only the stages that did not finish with the same settings (each finished
stage records them in its demo_manifest.json); --skip-training refuses such a stage.
"""
import argparse
import sys
from typing import List, Optional

from stl_mm.apis.demo import DemoStageError, check_seed, demo_sizes, run_demo
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
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        sizes = demo_sizes(args.quick, args.train_images, args.epochs, args.teacher_epochs)
        check_seed(args.seed)
    except ValueError as error:
        sys.exit(str(error))
    try:
        run_demo(args.work_dir, args.data_dir, sizes, seed=args.seed,
                 skip_training=args.skip_training, quick=args.quick,
                 command=' '.join(['python tools/demo.py', *argv]))
    except DemoStageError as error:
        sys.exit(str(error))


if __name__ == '__main__':
    main()
