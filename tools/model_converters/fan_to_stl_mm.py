"""Convert FAN checkpoints between the official NVlabs layout and stl_mm (mmengine) layout.

Official -> stl_mm (default) writes ``{'meta': ..., 'state_dict': {backbone.*, head.head.*,
head.aux_head.*}}``, loadable by a TokenLabelingClassifier (``load_from=``) or by a FAN
backbone (``init_cfg=dict(type='Pretrained', checkpoint=DST, prefix='backbone.')``)::

    python tools/model_converters/fan_to_stl_mm.py fan_vit_tiny.pth.tar fan_tiny_stl_mm.pth

``--reverse`` turns an stl_mm classifier checkpoint back into the official layout
(``{'state_dict': {...}}``), loadable by the official code::

    python tools/model_converters/fan_to_stl_mm.py --reverse work_dirs/x/epoch_300.pth fan.pth

EMA weights are taken when the source holds them, unless ``--no-ema``. Every stl_mm tool also
reads official checkpoints as they are; converting is only needed for other software.
"""
import argparse
from typing import List, Optional

from stl_mm.models.backbones.fan_checkpoint import CheckpointError, convert_checkpoint


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='source checkpoint')
    parser.add_argument('dst', help='where to write the converted checkpoint')
    parser.add_argument('--reverse', action='store_true',
                        help='convert an stl_mm checkpoint to the official layout')
    parser.add_argument('--no-ema', action='store_true',
                        help='take the raw weights even when EMA weights are present')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    try:
        print(convert_checkpoint(args.src, args.dst, reverse=args.reverse,
                                 use_ema=not args.no_ema))
    except CheckpointError as error:
        raise SystemExit(f'fan_to_stl_mm.py: {error}')


if __name__ == '__main__':
    main()
