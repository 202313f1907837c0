"""Draw the attention of any FAN over images: token mixing and class attention, per head.

One PNG per image (``<out-dir>/<image name>_attention.png``), one row per attention map: the
token-mixing attention of each of ``--blocks``, then the class attention of each
class-attention block (the class token's attention over the patches: where the classifier
reads the image from). Columns: the image, the token labels of the predicted class (models
with a token head), the mean over the heads and each head of ``--heads``.

A token-mixing matrix has one distribution per patch, so one view of it is drawn:
``--token-mixing query`` (default) draws the distribution of one query patch, the patches it
groups with (FAN's emerging grouping); the query is the patch the class attention attends to
most (a patch of the object), or the pixel ``--query X Y`` of the resized input.
``--token-mixing received`` draws the mean over all queries: how much attention each patch
receives. See :mod:`stl_mm.visualization.attention`.

Examples:
    python tools/visualization/visualize_attention.py \
        configs/stl/demo/fan_demo_token_labeler.py \
        work_dirs/demo/stage1_token_labeler/epoch_3.pth shoe.png shirt.png \
        --blocks 0 -1 --out-dir attention
    python tools/visualization/visualize_attention.py configs/fan/fan_t_hybrid_in1k.py \
        fan_tiny.pth cat.jpg --token-mixing received --heads 0 1
"""
import argparse
from typing import List, Optional

from mmengine.config import Config, DictAction

from stl_mm.visualization import visualize_attention
from stl_mm.visualization.attention import TOKEN_MIXING_VIEWS


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config with the FAN model and its test pipeline')
    parser.add_argument('checkpoint', help='model checkpoint (mmengine or official)')
    parser.add_argument('images', nargs='+', help='image files')
    parser.add_argument('--out-dir', default='attention', help='folder of the PNGs')
    parser.add_argument('--blocks', type=int, nargs='+', default=[-1],
                        help='FAN blocks whose token mixing is drawn (negative: from the last; '
                        'default: the last)')
    parser.add_argument('--heads', type=int, nargs='+', default=None,
                        help='heads drawn one by one next to their mean (default: all)')
    parser.add_argument('--token-mixing', choices=TOKEN_MIXING_VIEWS, default='query',
                        help='query: attention of one query patch; received: mean over queries')
    parser.add_argument('--query', type=float, nargs=2, metavar=('X', 'Y'), default=None,
                        help='query pixel of the resized model input (default: the patch the '
                        'class attention attends to most)')
    parser.add_argument('--hook-teacher', action='store_true',
                        help="use the model of the config's FrozenTeacherHook")
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    paths = visualize_attention(
        cfg, args.checkpoint, args.images, args.out_dir, blocks=args.blocks, heads=args.heads,
        token_mixing=args.token_mixing, query=args.query, hook_teacher=args.hook_teacher,
        device=args.device)
    for path in paths:
        print(f'Attention figure written to {path}')


if __name__ == '__main__':
    main()
