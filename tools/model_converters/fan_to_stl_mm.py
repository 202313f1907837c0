"""Convert FAN checkpoints between the official NVlabs layout and stl_mm (mmengine) layout.

Official -> stl_mm (default) writes ``{'meta': ..., 'state_dict': {backbone.*, head.head.*,
head.aux_head.*}}``, loadable by a TokenLabelingClassifier (``load_from=``) or by a FAN
backbone (``init_cfg=dict(type='Pretrained', checkpoint=DST, prefix='backbone.')``)::

    python tools/model_converters/fan_to_stl_mm.py fan_vit_tiny.pth.tar fan_tiny_stl_mm.pth

``--reverse`` turns an stl_mm classifier checkpoint back into the official layout
(``{'state_dict': {...}}``), loadable by the official code::

    python tools/model_converters/fan_to_stl_mm.py --reverse work_dirs/x/epoch_300.pth fan.pth

EMA weights are taken when the source holds them, unless ``--no-ema``.
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from stl_mm.models.backbones.fan_checkpoint import (  # noqa: E402
    describe_arch, is_official_layout, official_to_stl_mm, read_checkpoint, stl_mm_to_official)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='source checkpoint')
    parser.add_argument('dst', help='where to write the converted checkpoint')
    parser.add_argument('--reverse', action='store_true',
                        help='convert an stl_mm checkpoint to the official layout')
    parser.add_argument('--no-ema', action='store_true',
                        help='take the raw weights even when EMA weights are present')
    return parser.parse_args(argv)


def convert(src: str, dst: str, reverse: bool = False, use_ema: bool = True) -> str:
    """Converts ``src`` into ``dst``; returns a one-line summary."""
    state_dict, source = read_checkpoint(src, use_ema=use_ema)
    if reverse:
        if is_official_layout(state_dict):
            raise ValueError(f'{src} is already in the official layout; drop --reverse.')
        official = stl_mm_to_official(state_dict)
        torch.save({'state_dict': official, 'arch': describe_arch(official)}, dst)
        return f'{source} -> {dst} (official layout, {len(official)} tensors)'
    if not is_official_layout(state_dict):
        raise ValueError(f'{src} is not an official FAN checkpoint (no top-level cls_token / '
                         'blocks.* keys); for an stl_mm checkpoint use --reverse.')
    converted = official_to_stl_mm(state_dict)
    meta = dict(source=osp.basename(src), converted_from=source, arch=describe_arch(state_dict))
    torch.save({'meta': meta, 'state_dict': converted}, dst)
    return f'{source} -> {dst} (stl_mm layout, {len(converted)} tensors; {meta["arch"]})'


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    print(convert(args.src, args.dst, reverse=args.reverse, use_ema=not args.no_ema))


if __name__ == '__main__':
    main()
