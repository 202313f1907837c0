"""Evaluate a segmentation checkpoint on clean Cityscapes and on every Cityscapes-C cell.

Each cell (clean, or one corruption at one severity) runs through stl_mm's RobustnessCellLoop
with one runner: the config's test dataloader, its ``img_path`` pointed at
``CITY_C/<corruption>/<severity>`` while the labels stay the clean ``gtFine`` ones. Before
anything is evaluated, every pending cell is checked: it must hold exactly the clean image names,
and none of the checked files may be byte-identical to its clean source (a City-C tree of clean
copies, the failure mode of the official scripts, would otherwise report clean accuracy as
robustness).

Results go to ``OUT_DIR/city_c.{json,csv,md}``: mIoU per cell, per corruption (mean over
severities), the mean over corruptions, and retention (corrupted / clean). The JSON records what
the numbers came from (checkpoint content, config, both data roots) and is updated after every
cell; finished cells are skipped on a rerun with the same inputs, and other inputs are refused.

Examples:
    python tools/analysis_tools/test_city_c.py CONFIG CHECKPOINT --city-c data/cityscapes-c
    python -m torch.distributed.run --nproc_per_node 8 tools/analysis_tools/test_city_c.py \
        CONFIG CHECKPOINT --city-c data/cityscapes-c --launcher pytorch
"""
import argparse
import os.path as osp
from typing import Optional, Sequence

import stl_mm  # noqa: F401  (registers every module before the config is read)
from stl_mm.compat.imagecorruptions import ALL_CORRUPTIONS
from stl_mm.engine.runner_setup import close_distributed
from stl_mm.evaluation.robustness.arguments import (add_cell_arguments, add_evaluation_arguments,
                                                    at_least, evaluation_parser, prepare_evaluation,
                                                    selected_cells)
from stl_mm.evaluation.robustness.cityscapes_c import evaluate_city_c

RESULTS_NAME = 'city_c'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = evaluation_parser(__doc__, 'segmentation config file',
                               'mmengine checkpoint of the whole segmentor')
    parser.add_argument('--city-c', default='data/cityscapes-c',
                        help='root written by tools/dataset_converters/gen_city_c.py')
    add_cell_arguments(parser, ALL_CORRUPTIONS,
                       'corruptions to evaluate (default: all 19 that gen_city_c.py makes)',
                       'severities to evaluate (default 1-5; the official FAN script averaged '
                       'severities 1-3)')
    parser.add_argument('--out-dir', help='where the tables go (default: WORK_DIR/city_c)')
    parser.add_argument('--work-dir',
                        help='default parent of --out-dir (default: work_dirs/<config name>)')
    parser.add_argument('--check-files', type=at_least(0), default=16,
                        help='files per cell compared byte for byte with their clean source '
                        'before evaluating (0: all of them)')
    add_evaluation_arguments(parser)
    return selected_cells(parser.parse_args(argv))


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    cfg = prepare_evaluation(args)
    out_dir = args.out_dir or osp.join(cfg.work_dir, RESULTS_NAME)
    cfg.work_dir = osp.join(out_dir, 'logs')
    return evaluate_city_c(cfg, args.config, args.checkpoint, args.city_c,
                           osp.join(out_dir, f'{RESULTS_NAME}.json'), args.corruptions,
                           args.severities, args.check_files, use_ema=not args.no_ema)


if __name__ == '__main__':
    main()
    close_distributed()
