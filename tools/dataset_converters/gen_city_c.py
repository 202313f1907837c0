"""Generate Cityscapes-C: every val image under every corruption and severity.

Writes ``DST/<corruption>/<severity>/<city>/<name>_leftImg8bit.png`` for each
``SRC/<city>/<name>_leftImg8bit.png``, so that tools/analysis_tools/test_city_c.py can point
mmseg's Cityscapes dataset at any cell and keep the clean ``gtFine`` labels. Deterministic (one
seed per image, corruption and severity, whatever the worker count) and resumable (finished
files are skipped; every file is written under a temporary name and renamed). The logic lives
in :mod:`stl_mm.evaluation.robustness.cityscapes_c_generation`.

Example:
    python tools/dataset_converters/gen_city_c.py --src data/cityscapes/leftImg8bit/val \
        --dst data/cityscapes-c --workers 16
"""
import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from stl_mm.compat.imagecorruptions import ALL_CORRUPTIONS
from stl_mm.evaluation.robustness.arguments import add_cell_arguments, at_least, selected_cells
from stl_mm.evaluation.robustness.cityscapes_c_generation import IMAGE_SUFFIX, generate_city_c


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--src', default='data/cityscapes/leftImg8bit/val',
                        help='clean images, searched recursively for *' + IMAGE_SUFFIX)
    parser.add_argument('--dst', default='data/cityscapes-c', help='output root')
    add_cell_arguments(parser, ALL_CORRUPTIONS, 'corruptions to apply (default: all 19)')
    parser.add_argument('--workers', type=at_least(1), default=os.cpu_count() or 1,
                        help='worker processes (default: all CPU cores)')
    parser.add_argument('--seed', type=int, default=0,
                        help='base seed, mixed into every per-image seed')
    return selected_cells(parser.parse_args(argv))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    return generate_city_c(Path(args.src), Path(args.dst), args.corruptions, args.severities,
                           args.seed, args.workers)


if __name__ == '__main__':
    sys.exit(main())
