r"""Export a FAN classifier or dense backbone to ONNX with a dynamic batch, checked in ONNX Runtime.

:mod:`stl_mm.apis.export` says what is exported (class logits of a classifier config, the
dense FAN backbone of a segmentation / detection config, or ``--dense`` on a classifier
config) and how it is checked: ONNX Runtime, and with ``--torch-export`` the
``torch.export`` program, run the same random images as PyTorch at each ``--batch-sizes``;
the max abs difference of every output is printed, and the tool exits with an error when one
exceeds ``--atol``. Inputs are preprocessed images (N, 3, H, W), normalised as the config's
data preprocessor does.

Examples::

    python tools/deployment/pytorch2onnx.py configs/fan/fan_t_hybrid_in1k.py fan_t.pth \
        --out fan_t.onnx
    python tools/deployment/pytorch2onnx.py \
        configs/seg/segformer_fan-t-hybrid_8xb1-160k_cityscapes-1024x1024.py seg.pth \
        --out fan_t_seg_backbone.onnx --shape 512 1024 --torch-export fan_t_seg_backbone.pt2
"""
import argparse
from typing import List, Optional

from stl_mm.apis.export import (DEFAULT_ATOL, ExportCheckError, assert_close,
                                check_exported_program, check_onnx, export_onnx, export_program,
                                load_export_model)
from stl_mm.models.backbones.fan_checkpoint import CheckpointError
from stl_mm.utils import check_number


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='classifier, segmentation or detection config')
    parser.add_argument('checkpoint', help='checkpoint file (ours or official FAN/STL)')
    parser.add_argument('--out', required=True, help='ONNX file to write')
    parser.add_argument('--shape', nargs=2, type=int, default=[224, 224], metavar=('H', 'W'),
                        help='input height and width, fixed in the export (default 224 224)')
    parser.add_argument('--dense', action='store_true',
                        help='classifier config: export the backbone as FAN(dense=True)')
    parser.add_argument('--opset', type=int, help="ONNX opset (default: the exporter's)")
    parser.add_argument('--batch-sizes', nargs='+', type=int, default=[1, 3],
                        help='batch sizes the export is checked at (default 1 3)')
    parser.add_argument('--atol', type=float, default=DEFAULT_ATOL,
                        help=f'largest max abs difference to PyTorch accepted '
                        f'(default {DEFAULT_ATOL:g})')
    parser.add_argument('--torch-export', metavar='PATH.pt2',
                        help='also write a torch.export program with a dynamic batch, checked '
                        'the same way')
    parser.add_argument('--no-ema', action='store_true',
                        help='use the raw weights of a checkpoint that also holds EMA weights')
    args = parser.parse_args(argv)
    if min(args.shape) < 1 or min(args.batch_sizes) < 1:
        parser.error(f'--shape {args.shape} and --batch-sizes {args.batch_sizes} must be '
                     'positive.')
    try:
        check_number('--atol', args.atol, positive=True)
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    try:
        target = load_export_model(args.config, args.checkpoint, args.dense, not args.no_ema)
        print(f'Exporting the {target.description}: images (N, 3, {args.shape[0]}, '
              f'{args.shape[1]}) -> {", ".join(target.output_names)}')
        export_onnx(target.module, args.out, args.shape, target.output_names, args.opset)
        print(f'Wrote {args.out}')
        differences = check_onnx(args.out, target.module, args.shape, target.output_names,
                                 args.batch_sizes)
        if args.torch_export:
            export_program(target.module, args.shape, args.torch_export)
            print(f'Wrote {args.torch_export}')
            differences += check_exported_program(args.torch_export, target.module,
                                                  args.shape, target.output_names,
                                                  args.batch_sizes)
        for difference in differences:
            print(difference)
        assert_close(differences, args.atol)
    except (CheckpointError, ExportCheckError, ImportError, ValueError) as error:
        raise SystemExit(f'pytorch2onnx.py: {error}')
    print(f'OK: every output within --atol {args.atol:g} of PyTorch at batch sizes '
          f'{" ".join(map(str, args.batch_sizes))}.')


if __name__ == '__main__':
    main()
