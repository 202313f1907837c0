"""High-level entry points: run a token labeler on a config's views, export models (ONNX,
torch.export) checked against PyTorch, and the Fashion-MNIST demo.

The demo lives in :mod:`stl_mm.apis.demo` (imported on demand: it pulls in the figure code).
"""
from .export import (ClassLogits, ExportCheckError, ExportModel, OutputDifference, assert_close,
                     check_exported_program, check_onnx, export_onnx, export_program,
                     load_export_model)
from .token_labeler import (SPLITS, VIEWS, build_view_dataset, collect_views,
                            find_teacher_hook, load_token_labeler)

__all__ = ['SPLITS', 'VIEWS', 'build_view_dataset', 'collect_views', 'find_teacher_hook',
           'load_token_labeler', 'ClassLogits', 'ExportCheckError', 'ExportModel',
           'OutputDifference', 'assert_close', 'check_exported_program', 'check_onnx',
           'export_onnx', 'export_program', 'load_export_model']
