"""Export FAN models (ONNX, ``torch.export``) with a dynamic batch axis, checked against PyTorch.

What is exported (:func:`load_export_model`):

* a classifier config (``TokenLabelingClassifier`` or any mmpretrain ``ImageClassifier`` with
  a FAN backbone): images (N, 3, H, W) -> ``logits`` (N, K), the class logits that
  ``predict`` turns into scores (:class:`ClassLogits`);
* a dense FAN backbone: the ``model.backbone`` of an mmseg / mmdet config, or (``dense=True``)
  the backbone of a classifier config rebuilt as ``FAN(dense=True)`` with the same arch:
  images -> one NCHW map per ``out_indices`` level, named ``level{i}``.

Inputs are images as the network sees them, after the data preprocessor (mean / std
normalisation, channel order); the preprocessor is not part of the export. Weights come from
the checkpoint through :func:`~stl_mm.models.backbones.fan_checkpoint.load_checkpoint`
(official FAN / STL files are converted in memory), strictly: a model weight the file does not
set stops the export, since an exported model with initial weights in it would look fine.

Every export is checked (:func:`check_onnx`, :func:`check_exported_program`): the exported
model and the PyTorch model run the same random inputs at several batch sizes, and
:func:`assert_close` refuses differences above a bound.
"""
import copy
import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope

from stl_mm.models.backbones import FAN
from stl_mm.models.backbones.fan_checkpoint import (CheckpointMismatchError, LoadReport,
                                                    load_checkpoint)

__all__ = ['ClassLogits', 'ExportModel', 'OutputDifference', 'ExportCheckError',
           'flatten_outputs', 'example_input', 'load_export_model', 'export_onnx',
           'export_program', 'check_onnx', 'check_exported_program', 'assert_close']

#: Batch size of the example input the graphs are recorded with. Not 1: torch.export
#: specialises a dimension of size 1 (or 0) to a constant.
EXAMPLE_BATCH = 2
#: Default bound on the max abs difference between an export and PyTorch (float32). The
#: runtimes order and fuse the same float32 operations differently (GELU, LayerNorm,
#: softmax, GEMM blocking): ONNX Runtime moved the logits of a full-size FAN-T-Hybrid at
#: 224x224 (values up to 3.7) by 2.4e-6. 1e-4 leaves room for larger models and inputs, and
#: is the bound of the official-parity tests; a real fault (a batch size baked into the graph,
#: a wrong op, a missing weight) moves outputs by about their own size.
DEFAULT_ATOL = 1e-4


class ExportCheckError(RuntimeError):
    """An exported model disagrees with PyTorch (or fails to run) at some batch size."""


class ClassLogits(nn.Module):
    """An mmpretrain image classifier as a module from images to class logits (N, K).

    The module runs the classifier's ``mode='tensor'``: one (N, K) tensor, the logits its
    ``predict`` turns into scores (for a :class:`~stl_mm.models.classifiers.TokenLabelingClassifier`
    the class logits, or ``cls + 0.5 * max over tokens`` with ``eval_with_token_logits``).
    Exporters call ``forward(images)`` with one argument, hence this wrapper.

    Args:
        classifier: The mmpretrain classifier.
    """

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.classifier(inputs, mode='tensor')


@dataclass
class ExportModel:
    """A model ready to export: CPU, float32, eval mode, images -> tensors.

    Attributes:
        module: The module to export.
        output_names: One name per output tensor, in order.
        description: What it is, for messages (e.g. ``'TokenLabelingClassifier (class
            logits)'``).
        load_report: What :func:`load_checkpoint` loaded.
    """
    module: nn.Module
    output_names: Tuple[str, ...]
    description: str
    load_report: LoadReport


@dataclass
class OutputDifference:
    """How far one output of an exported model is from PyTorch's at one batch size.

    Attributes:
        runtime: What ran the export (``'onnxruntime'``, ``'torch.export'``).
        batch_size: Batch size of the inputs.
        output: Output name.
        max_abs_diff: Largest absolute difference over the output's elements.
        max_abs_reference: Largest absolute value of PyTorch's output (for scale).
    """
    runtime: str
    batch_size: int
    output: str
    max_abs_diff: float
    max_abs_reference: float

    def __str__(self) -> str:
        return (f'{self.runtime} vs PyTorch, batch {self.batch_size}, {self.output}: max abs '
                f'difference {self.max_abs_diff:.3g} (outputs up to {self.max_abs_reference:.3g})')


# ---------------------------------------------------------------------- building and loading
def _fan_config(backbone_cfg: dict, where: str) -> dict:
    """The FAN arguments of a ``model.backbone`` config; refuses other backbones."""
    cfg = dict(backbone_cfg)
    kind = str(cfg.pop('type', ''))
    if kind.split('.')[-1] != 'FAN':
        raise ValueError(f"{where}: model.backbone.type is {kind!r}; the export supports FAN "
                         "backbones (type='FAN').")
    # The weights come from the checkpoint given to the export, not from init_cfg.
    cfg.pop('init_cfg', None)
    return cfg


def load_export_model(config: Union[str, Config],
                      checkpoint: str,
                      dense: bool = False,
                      use_ema: bool = True) -> ExportModel:
    """Build the model to export from a config and load its checkpoint strictly.

    Args:
        config: Config file or object. ``default_scope`` ``'mmpretrain'`` (a classifier) or
            ``'mmseg'`` / ``'mmdet'`` (its FAN backbone is exported).
        checkpoint: Checkpoint file, ours (mmengine) or official FAN / STL.
        dense: For a classifier config: export its backbone as ``FAN(dense=True)`` (same
            arch, the classifier's Fourier frequencies, no ``learnable_downsample``: every
            weight then comes from the classification checkpoint) instead of the class logits.
        use_ema: The EMA rule of :func:`load_checkpoint`.

    Raises:
        ValueError: The config's model is not a FAN classifier / FAN dense backbone.
        CheckpointError: The checkpoint cannot be read, does not fit, or leaves model weights
            unset.
    """
    cfg = Config.fromfile(config) if isinstance(config, str) else config
    where = config if isinstance(config, str) else 'The config'
    scope = cfg.get('default_scope', 'mmpretrain')
    init_default_scope(scope)
    model_cfg = copy.deepcopy(cfg.model)
    backbone_cfg = model_cfg.get('backbone')
    if backbone_cfg is None:
        raise ValueError(f'{where}: model has no backbone; the export takes classifier, '
                         'segmentation or detection configs with a FAN backbone.')
    if scope != 'mmpretrain':
        if not backbone_cfg.get('dense', False):
            raise ValueError(f'{where}: model.backbone is not dense (dense=False); a {scope} '
                             'config needs FAN(dense=True).')
        module = target = FAN(**_fan_config(backbone_cfg, where))
        description = f'dense FAN backbone of the {scope} {model_cfg.get("type")}'
    elif dense:
        fan_cfg = _fan_config(backbone_cfg, where)
        fan_cfg.setdefault('paired_fourier_frequencies', True)
        module = target = FAN(**dict(fan_cfg, dense=True, feat_downsample=False))
        description = f'FAN(dense=True) from the backbone of {model_cfg.get("type")}'
    else:
        from mmpretrain.registry import MODELS
        _fan_config(backbone_cfg, where)
        target = MODELS.build(model_cfg)
        module = ClassLogits(target)
        description = f'{type(target).__name__} (class logits)'
    module = revert_sync_batchnorm(module).float().eval()
    report = load_checkpoint(target, checkpoint, use_ema, prefix=None)
    if report.new:
        raise CheckpointMismatchError(
            f'{checkpoint} leaves weights of the {description} at their initial values: '
            f'{", ".join(report.new[:12])}. An exported model needs every weight from the '
            'checkpoint; use a checkpoint of this task (e.g. a detection checkpoint for the '
            "detection backbone's learnable_downsample).")
    names = (('logits', ) if isinstance(module, ClassLogits) else
             tuple(f'level{level}' for level in module.out_indices))
    return ExportModel(module, names, description, report)


# ---------------------------------------------------------------------- exporting
def flatten_outputs(outputs) -> List[torch.Tensor]:
    """A tensor or a (nested) tuple / list of tensors -> the list of tensors."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, (tuple, list)):
        return [tensor for item in outputs for tensor in flatten_outputs(item)]
    raise TypeError(f'Exported models must return tensors, got {type(outputs).__name__}.')


def example_input(input_shape: Sequence[int], batch_size: int = EXAMPLE_BATCH,
                  seed: int = 0) -> torch.Tensor:
    """Random float32 images (batch_size, 3, H, W) from a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, 3, *input_shape, generator=generator)


def _batch_dim() -> torch.export.Dim:
    return torch.export.Dim('batch', min=1)


def _require(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ImportError(f'{name} is needed for ONNX export and checks; install the deploy '
                          'extras: pip install -r requirements/deploy.txt (or pip install -e '
                          '".[deploy]").') from error


def export_onnx(model: nn.Module,
                path: str,
                input_shape: Sequence[int],
                output_names: Sequence[str],
                opset: Optional[int] = None) -> None:
    """Export ``model`` to ONNX with a dynamic batch axis (``torch.onnx.export``, dynamo).

    Args:
        model: A module from images (N, 3, H, W) to tensors, in eval mode.
        path: Output ``.onnx`` file (weights inside it).
        input_shape: (H, W) of the images; fixed in the graph.
        output_names: One name per output tensor.
        opset: ONNX opset; None takes the exporter's default.
    """
    for name in ('onnx', 'onnxscript'):
        _require(name)
    example = example_input(input_shape)
    with torch.no_grad():  # an inference graph, as a deployed model runs
        model(example)  # shape errors surface as eager errors, not as exporter traces
        program = torch.onnx.export(model, (example, ), None, input_names=['images'],
                                    output_names=list(output_names), opset_version=opset,
                                    dynamo=True, dynamic_shapes=({0: _batch_dim()}, ),
                                    external_data=False)
    program.save(path, external_data=False)


def export_program(model: nn.Module, input_shape: Sequence[int],
                   path: Optional[str] = None) -> torch.export.ExportedProgram:
    """``torch.export.export`` of ``model`` with a dynamic batch axis (``Dim('batch')``).

    Args:
        model: A module from images (N, 3, H, W) to tensors, in eval mode.
        input_shape: (H, W) of the images; fixed in the program.
        path: If given, the program is saved there (``torch.export.save``, a ``.pt2`` file).
    """
    example = example_input(input_shape)
    with torch.no_grad():  # an inference graph, as a deployed model runs
        model(example)
        program = torch.export.export(model, (example, ), dynamic_shapes=({0: _batch_dim()}, ))
    if path is not None:
        torch.export.save(program, path)
    return program


# ---------------------------------------------------------------------- checking
def _compare(runtime: str, run: Callable[[torch.Tensor], List[torch.Tensor]], model: nn.Module,
             input_shape: Sequence[int], output_names: Sequence[str],
             batch_sizes: Sequence[int], seed: int) -> List[OutputDifference]:
    differences = []
    for batch_size in batch_sizes:
        images = example_input(input_shape, batch_size, seed)
        with torch.no_grad():
            expected = flatten_outputs(model(images))
        try:
            got = run(images)
        except Exception as error:  # noqa: B902  (any runtime failure is the check's answer)
            raise ExportCheckError(f'{runtime} failed on a batch of {batch_size} '
                                   f'{tuple(images.shape)}: {error}') from error
        if len(got) != len(expected):
            raise ExportCheckError(f'{runtime} returned {len(got)} outputs, PyTorch '
                                   f'{len(expected)}.')
        for name, ours, theirs in zip(output_names, got, expected):
            if tuple(ours.shape) != tuple(theirs.shape):
                raise ExportCheckError(f'{runtime}, batch {batch_size}, {name}: shape '
                                       f'{tuple(ours.shape)}, PyTorch {tuple(theirs.shape)}.')
            differences.append(OutputDifference(
                runtime, batch_size, name, (ours.float() - theirs).abs().max().item(),
                theirs.abs().max().item()))
    return differences


def check_onnx(path: str,
               model: nn.Module,
               input_shape: Sequence[int],
               output_names: Sequence[str],
               batch_sizes: Sequence[int] = (1, 3),
               seed: int = 0) -> List[OutputDifference]:
    """Run an ONNX file in ONNX Runtime (CPU) and ``model`` on the same random images.

    Returns:
        One :class:`OutputDifference` per batch size and output.

    Raises:
        ExportCheckError: ONNX Runtime fails, or its outputs have other shapes.
    """
    ort = _require('onnxruntime')
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    input_name = session.get_inputs()[0].name

    def run(images: torch.Tensor) -> List[torch.Tensor]:
        return [torch.from_numpy(out) for out in session.run(None, {input_name: images.numpy()})]

    return _compare('onnxruntime', run, model, input_shape, output_names, batch_sizes, seed)


def check_exported_program(program: Union[str, torch.export.ExportedProgram],
                           model: nn.Module,
                           input_shape: Sequence[int],
                           output_names: Sequence[str],
                           batch_sizes: Sequence[int] = (1, 3),
                           seed: int = 0) -> List[OutputDifference]:
    """Run an exported program (or a saved ``.pt2`` file) and ``model`` on the same images.

    Returns:
        One :class:`OutputDifference` per batch size and output.

    Raises:
        ExportCheckError: The program fails, or its outputs have other shapes.
    """
    if isinstance(program, str):
        program = torch.export.load(program)
    exported = program.module()

    def run(images: torch.Tensor) -> List[torch.Tensor]:
        with torch.no_grad():
            return flatten_outputs(exported(images))

    return _compare('torch.export', run, model, input_shape, output_names, batch_sizes, seed)


def assert_close(differences: Sequence[OutputDifference], atol: float = DEFAULT_ATOL) -> None:
    """Raise :class:`ExportCheckError` naming every output whose difference exceeds ``atol``."""
    bad = [diff for diff in differences if not diff.max_abs_diff <= atol]
    if bad:
        raise ExportCheckError(
            f'The export disagrees with PyTorch beyond --atol {atol:g}: '
            + '; '.join(map(str, bad)) + '. Do not use this export; report the model and '
            'the command.')
