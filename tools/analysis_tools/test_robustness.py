"""Evaluate a classifier on the robustness battery: ImageNet-1K, -C, -A, -R, -V2, -Sketch, -ReaL,
-P and shape bias on the cue-conflict stimuli.

Every suite runs as cells (one corruption at one severity for ImageNet-C, one variant for
ImageNet-V2, one perturbation for ImageNet-P, the whole set otherwise) of stl_mm's
RobustnessCellLoop with one runner. After every cell the results file is rewritten atomically,
so an interrupted run resumes where it stopped. The file records what the numbers came from
(checkpoint content, config, data roots and modes, real.json's content); a rerun whose inputs
differ is refused. Every pending suite's data is read before anything runs, and published
ImageNet-C cells are checked against the clean val set (same classes, same image counts). The
tables (also in ``--out`` as ``.md``): clean top-1, ImageNet-C mCA, mCE and relative mCE
(AlexNet-normalised, 15 benchmark corruptions), retention (mCA / clean), ImageNet-A/-R
(200-class masks), -V2 (per variant) and -Sketch top-1, ReaL top-1 with the original top-1 on
the same images, ImageNet-P flip probability and top-5 distance per perturbation (FR, mFR and
mT5D with AlexNet's figures in the suites file), and the shape bias overall and per category. A
model card (``--out`` as ``.card.json``) holds the same figures, machine-readable.

Data roots live in configs/robustness/suites.py. Official FAN/STL checkpoints are accepted.

Examples:
    # the whole battery
    python tools/analysis_tools/test_robustness.py CONFIG CHECKPOINT --out results/fan_b.json
    python tools/analysis_tools/test_robustness.py CONFIG CHECKPOINT --suites in-c \\
        --corruptions fog snow --severities 3 5 --out results/fan_b.json
    # 8 GPUs (same launcher as tools/dist_test.sh):
    python -m torch.distributed.run --nproc_per_node=8 tools/analysis_tools/test_robustness.py \\
        CONFIG CHECKPOINT --launcher pytorch
"""
import argparse
import os.path as osp
from typing import Optional, Sequence

import stl_mm  # noqa: F401  (registers every module before configs are read)
from stl_mm.compat.imagecorruptions import BENCHMARK_CORRUPTIONS
from stl_mm.datasets.imagenet_p import ALL_PERTURBATIONS
from stl_mm.datasets.robustness import IMAGENET_V2_VARIANTS
from stl_mm.engine.runner_setup import close_distributed
from stl_mm.evaluation.robustness.arguments import (add_cell_arguments, add_evaluation_arguments,
                                                    evaluation_parser, prepare_evaluation,
                                                    selected_cells)
from stl_mm.evaluation.robustness.imagenet import (SUITES, evaluate_imagenet_robustness,
                                                   read_suite_specs)
from stl_mm.evaluation.robustness.imagenet_p import selected_perturbations

SUITE_CONFIG = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
                        'configs', 'robustness', 'suites.py')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = evaluation_parser(__doc__, 'model config (its test pipeline and loader are used)',
                               'checkpoint file (ours or official FAN/STL)',
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--suites', nargs='+', choices=list(SUITES), default=list(SUITES),
                        help='suites to run (default: all)')
    parser.add_argument('--v2-variants', nargs='+', choices=list(IMAGENET_V2_VARIANTS),
                        default=list(IMAGENET_V2_VARIANTS), help='ImageNet-V2 variants')
    add_cell_arguments(parser, BENCHMARK_CORRUPTIONS,
                       'ImageNet-C corruptions (default: the 15 of mCE)')
    parser.add_argument('--in-c-on-the-fly', action='store_true',
                        help='corrupt the clean val set at load time instead of reading the '
                        'published ImageNet-C')
    parser.add_argument('--perturbations', nargs='+', choices=ALL_PERTURBATIONS + ('all', ),
                        metavar='NAME', help='ImageNet-P perturbations (default: the 10 of mFR, '
                        'or the ones --in-p-on-the-fly generates); any of '
                        f'{", ".join(ALL_PERTURBATIONS)}, or all')
    parser.add_argument('--in-p-on-the-fly', action='store_true',
                        help='generate ImageNet-P sequences from the clean val set instead of '
                        'reading the published videos (figures differ from the release)')
    parser.add_argument('--allow-incomplete', action='store_true',
                        help='evaluate ImageNet-C cells that lack images or classes of the '
                        'clean set; the tables then show their image count')
    parser.add_argument('--out', help='results JSON (default: WORK_DIR/robustness.json); '
                        'a Markdown copy goes next to it')
    parser.add_argument('--work-dir', help='where logs and converted checkpoints go')
    parser.add_argument('--suite-config', default=SUITE_CONFIG,
                        help='file defining the suites and their data roots')
    parser.add_argument('--data-root', nargs='+', action='extend', default=[],
                        metavar='SUITE=PATH',
                        help='override a suite\'s data root for this run, e.g. in-c=/data/in-c')
    add_evaluation_arguments(parser)
    args = selected_cells(parser.parse_args(argv))
    args.suites = list(dict.fromkeys(args.suites))
    args.v2_variants = list(dict.fromkeys(args.v2_variants))
    args.perturbations = selected_perturbations(args.perturbations, args.in_p_on_the_fly)
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    cfg = prepare_evaluation(args)
    on_the_fly = ['in-c'] * args.in_c_on_the_fly + ['in-p'] * args.in_p_on_the_fly
    specs = read_suite_specs(args.suite_config, args.data_root, on_the_fly)
    return evaluate_imagenet_robustness(
        cfg, args.config, args.checkpoint, args.out or osp.join(cfg.work_dir, 'robustness.json'),
        args.suites, args.corruptions, args.severities, specs, on_the_fly=on_the_fly,
        use_ema=not args.no_ema, allow_incomplete=args.allow_incomplete,
        v2_variants=args.v2_variants, perturbations=args.perturbations)


if __name__ == '__main__':
    main()
    close_distributed()
