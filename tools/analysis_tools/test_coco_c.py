"""COCO-C robustness of a detector: box and mask mAP under common corruptions.

Every cell (corruption, severity) evaluates the config's test set with stl_mm's ImageCorruption
inserted right after ``LoadImageFromFile`` (images corrupted on the fly at their original
resolution, in mmcv's BGR order as mmdet's benchmark does); one extra ``clean`` cell gives the
reference. The model is built and loaded once; the cells run in stl_mm's RobustnessCellLoop.
Each image has its own seed (file name, corruption, severity, ``--seed``), so a cell gives the
same images alone, resumed, or with any number of processes and workers.

Outputs in ``--out-dir``: ``coco_c.json`` (every finished cell with all its COCO metrics, what
the numbers came from, and the summary) and ``coco_c.md`` (tables). The JSON is rewritten after
each cell; cells already in it are skipped on a rerun with the same inputs, and a rerun with
other inputs (checkpoint content, config, seed) is refused. The logic lives in
:mod:`stl_mm.evaluation.robustness.coco_c`.

Summary, per headline metric (``bbox_mAP``, ``segm_mAP``): the clean value (P), the mean over
severities of each corruption and its retention, mPC and rPC = mPC / P.

Examples:
    python tools/analysis_tools/test_coco_c.py \\
        configs/det/cascade-mask-rcnn_fan-t-hybrid_fpn_ms-3x_coco.py \\
        work_dirs/cascade-mask-rcnn_fan-t-hybrid_fpn_ms-3x_coco/epoch_36.pth
    python tools/analysis_tools/test_coco_c.py CONFIG CKPT --corruptions fog snow --severities 3 5
    python -m torch.distributed.run --nproc_per_node=8 tools/analysis_tools/test_coco_c.py \\
        CONFIG CKPT --launcher pytorch --out-dir work_dirs/coco_c/fan_t
"""
import argparse
import os.path as osp
from typing import Optional, Sequence

import stl_mm  # noqa: F401  (registers the backbone and patches imagecorruptions)
from stl_mm.compat.imagecorruptions import BENCHMARK_CORRUPTIONS
from stl_mm.engine.runner_setup import close_distributed
from stl_mm.evaluation.robustness.arguments import (add_cell_arguments, add_evaluation_arguments,
                                                    evaluation_parser, prepare_evaluation,
                                                    selected_cells)
from stl_mm.evaluation.robustness.coco_c import evaluate_coco_c

RESULTS_FILE = 'coco_c.json'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = evaluation_parser(__doc__, 'detector config file',
                               'detector checkpoint (mmengine format)')
    add_cell_arguments(parser, BENCHMARK_CORRUPTIONS,
                       'corruptions to evaluate (default: the 15 benchmark ones)')
    parser.add_argument('--out-dir', help='results folder (default: work_dirs/coco_c/<config>)')
    parser.add_argument('--seed', type=int, default=0, help='base seed of the corruptions')
    add_evaluation_arguments(parser)
    return selected_cells(parser.parse_args(argv))


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Run the tool; returns the results (also written to ``--out-dir``)."""
    args = parse_args(argv)
    config_name = osp.splitext(osp.basename(args.config))[0]
    out_dir = args.out_dir or osp.join('work_dirs', 'coco_c', config_name)
    cfg = prepare_evaluation(args, osp.join(out_dir, 'logs'))
    return evaluate_coco_c(cfg, args.config, args.checkpoint, osp.join(out_dir, RESULTS_FILE),
                           args.corruptions, args.severities, args.seed,
                           use_ema=not args.no_ema)


if __name__ == '__main__':
    main()
    close_distributed()
