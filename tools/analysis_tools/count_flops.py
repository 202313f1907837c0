r"""Count parameters and FLOPs of FAN presets (the table in docs/presets.md).

:mod:`stl_mm.analysis.flops` says what is counted.

Examples::

    python tools/analysis_tools/count_flops.py            # every official preset at 224x224
    python tools/analysis_tools/count_flops.py --arch b-hybrid --size 1024 1024 --dense \
        --markdown
"""
import argparse
from typing import List, Optional

from stl_mm.analysis.flops import DEFAULT_ARCHS, MARKDOWN_HEADER, count_flops, markdown_row


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--arch', nargs='+', default=list(DEFAULT_ARCHS),
                        help='presets to count')
    parser.add_argument('--size', nargs=2, type=int, default=[224, 224], metavar=('H', 'W'))
    parser.add_argument('--dense', action='store_true', help='count the dense backbone')
    parser.add_argument('--no-feat-downsample', action='store_true',
                        help='dense hybrids: keep the last level at stride 16')
    parser.add_argument('--markdown', action='store_true', help='print a markdown table')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    if args.markdown:
        print(MARKDOWN_HEADER)
    for arch in args.arch:
        result = count_flops(arch, args.size, args.dense, not args.no_feat_downsample)
        print(markdown_row(result) if args.markdown else result)


if __name__ == '__main__':
    main()
