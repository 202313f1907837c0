"""Draw the token labels of a token labeler (teacher) as in Fig. 2 of the STL paper.

One row per image: the image, the tokens labelled as the image's class, the same split into
confident and unconfident labels, the tokens a hard Gumbel-softmax draw labels as the class, and
the histogram of the teacher's confidence (see :mod:`stl_mm.visualization.token_labels`).

Works for any dataset config and any teacher checkpoint: a stage-1 config with its checkpoint,
a stage-2 config whose FrozenTeacherHook describes the teacher (``--hook-teacher``), or an
official STL teacher checkpoint (converted on the fly). With ``--foreground-threshold`` (objects
on a black background, e.g. Fashion-MNIST) the ground-truth foreground is outlined and the
histogram counts foreground tokens only.

Examples:
    python tools/visualization/visualize_token_labels.py configs/stl/fan_t_token_labeler.py \
        work_dirs/fan_t_token_labeler/epoch_350.pth --split val --indices 0 1 2 3
    python tools/visualization/visualize_token_labels.py configs/stl/demo/fan_demo_student.py \
        work_dirs/demo/stage1_token_labeler/epoch_3.pth --hook-teacher --split test \
        --view teacher --foreground-threshold 10 --out token_labels.png
"""
import argparse
from typing import List, Optional

from mmengine.config import Config, DictAction

from stl_mm.apis.token_labeler import SPLITS, VIEWS
from stl_mm.visualization import visualize_token_labels


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config with the dataset (and the token labeler model)')
    parser.add_argument('checkpoint', help='token labeler checkpoint (mmengine or official)')
    parser.add_argument('--out', default='token_labels.png', help='PNG to write')
    parser.add_argument('--split', choices=SPLITS, default='val')
    parser.add_argument('--indices', type=int, nargs='+', default=[0, 1, 2, 3])
    parser.add_argument('--view', choices=VIEWS, default='clean',
                        help='clean: test pipeline; teacher / student: the two views of a '
                        'DualView training pipeline')
    parser.add_argument('--hook-teacher', action='store_true',
                        help="use the model of the config's FrozenTeacherHook")
    parser.add_argument('--foreground-threshold', type=float, default=None,
                        help='pixel value (0-255) above which a pixel is foreground (objects '
                        'on a black background only)')
    parser.add_argument('--confidence-threshold', type=float, default=0.5)
    parser.add_argument('--tau', type=float, default=1.0, help='Gumbel-softmax temperature')
    parser.add_argument('--seed', type=int, default=0, help='augmentation and Gumbel seed')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. data_root=...')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    path = visualize_token_labels(
        cfg, args.checkpoint, args.out, split=args.split, indices=args.indices, view=args.view,
        hook_teacher=args.hook_teacher, foreground_threshold=args.foreground_threshold,
        confidence_threshold=args.confidence_threshold, tau=args.tau, seed=args.seed,
        device=args.device)
    print(f'Token-label figure written to {path}')


if __name__ == '__main__':
    main()
