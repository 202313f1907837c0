"""stl_mm.apis.export and tools/deployment/pytorch2onnx.py: exports with a dynamic batch that
give PyTorch's outputs at other batch sizes (ONNX Runtime, torch.export, torch.jit.trace)."""
import inspect
import re
import runpy
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmpretrain.registry import MODELS

import stl_mm  # noqa: F401
from stl_mm.apis.export import (ClassLogits, ExportCheckError, OutputDifference, assert_close,
                                check_exported_program, check_onnx, export_onnx, export_program,
                                flatten_outputs, load_export_model)
from stl_mm.models.backbones import FAN
from stl_mm.models.backbones.fan_checkpoint import CheckpointMismatchError
from stl_mm.models.backbones.fan_layers import ConvMlp

REPO = Path(__file__).resolve().parents[2]
TINY_HYBRID = dict(embed_dims=32, depth=2, num_heads=2,
                   hybrid_stem=dict(depths=[1, 1], dims=[8, 16]), dense_blocks=(1, ))
TINY_VIT = dict(embed_dims=32, depth=2, num_heads=2, patch_size=16, dense_blocks=(0, ))
# The XLarge pattern: the grid halves inside the block stack (after block 1).
TINY_XL = dict(embed_dims=[32, 32, 48], depth=3, num_heads=[2, 2, 4],
               hybrid_stem=dict(depths=[1, 1], dims=[8, 16]), dense_blocks=(0, ))
SHAPE = (32, 48)  # not square: a mixed-up height and width would show
BATCHES = (1, 3)  # the graphs are recorded at batch 2


@pytest.fixture(autouse=True)
def small_stem_chunks(monkeypatch):
    """Real inputs (224x224 and up) make the hybrid stem's CPU inference path split its rows
    into chunks; tiny inputs would not, so the chunks are made tiny here (8 rows)."""
    monkeypatch.setattr(ConvMlp, 'cpu_inference_chunk_elements', 8 * 32)


def _classifier(arch: dict) -> torch.nn.Module:
    model = MODELS.build(dict(type='TokenLabelingClassifier', backbone=dict(type='FAN', arch=arch),
                              head=dict(type='TokenLabelingHead', num_classes=5)))
    model.init_weights()
    return model.eval()


def _dense(arch: dict) -> FAN:
    model = FAN(arch, dense=True)
    model.init_weights()
    return model.eval()


def _perturb_layer_scales(model: torch.nn.Module) -> None:
    """The ConvNeXt stem's layer scales start at 1e-6, which would hide a wrong stem MLP."""
    for module in model.modules():
        if type(module).__name__ == 'ConvNeXtBlock':
            torch.nn.init.normal_(module.gamma, std=0.5)


def _output_names(module: torch.nn.Module):
    return ('logits', ) if isinstance(module, ClassLogits) else tuple(
        f'level{i}' for i in module.out_indices)


MODELS_TO_EXPORT = {
    'hybrid-classifier': lambda: ClassLogits(_classifier(TINY_HYBRID)),
    'vit-classifier': lambda: ClassLogits(_classifier(TINY_VIT)),
    'hybrid-dense': lambda: _dense(TINY_HYBRID),
    'vit-dense': lambda: _dense(TINY_VIT),
    'xl-dense': lambda: _dense(TINY_XL),
}


# Each ONNX export takes seconds (torch.export, then the translation): the hybrid classifier
# and the ViT dense backbone cover both families and both kinds of output.
@pytest.mark.parametrize('name', ['hybrid-classifier', 'vit-dense'])
def test_onnx_runs_at_other_batch_sizes_in_onnx_runtime(name, tmp_path):
    """The hybrid stem's chunked CPU path used to be recorded: the export then ran at the
    example's batch size only."""
    model = MODELS_TO_EXPORT[name]()
    _perturb_layer_scales(model)
    path = str(tmp_path / 'model.onnx')
    names = _output_names(model)
    export_onnx(model, path, SHAPE, names)
    differences = check_onnx(path, model, SHAPE, names, BATCHES)
    assert [(d.batch_size, d.output) for d in differences] == [
        (batch, output) for batch in BATCHES for output in names]
    assert_close(differences, atol=1e-4)


def test_legacy_onnx_exporter_gives_a_dynamic_batch_too(tmp_path):
    """The TorchScript-based exporter (dynamo=False) recorded the stem's row chunks as a
    Split of fixed sizes: ONNX Runtime refused other batch sizes ('Split size exceeds')."""
    model = _dense(TINY_HYBRID)
    _perturb_layer_scales(model)
    path = str(tmp_path / 'legacy.onnx')
    names = _output_names(model)
    with torch.no_grad():
        torch.onnx.export(model, (torch.randn(2, 3, *SHAPE), ), path, dynamo=False,
                          input_names=['images'], output_names=list(names),
                          dynamic_axes={name: {0: 'batch'} for name in ('images', *names)})
    assert_close(check_onnx(path, model, SHAPE, names, BATCHES))


@pytest.mark.parametrize('name', ['hybrid-classifier', 'hybrid-dense', 'xl-dense'])
def test_torch_export_with_a_dynamic_batch(name, tmp_path):
    """torch.export with Dim('batch') used to raise 'Constraints violated' for hybrids."""
    model = MODELS_TO_EXPORT[name]()
    _perturb_layer_scales(model)
    path = str(tmp_path / 'model.pt2')
    export_program(model, SHAPE, path)
    names = _output_names(model)
    assert_close(check_exported_program(path, model, SHAPE, names, BATCHES), atol=1e-5)


@pytest.mark.parametrize('name', ['hybrid-classifier', 'hybrid-dense', 'xl-dense'])
def test_jit_trace_at_one_batch_size_runs_at_another(name):
    model = MODELS_TO_EXPORT[name]()
    _perturb_layer_scales(model)
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always', torch.jit.TracerWarning)
        traced = torch.jit.trace(model, torch.randn(2, 3, *SHAPE))
        images = torch.randn(3, 3, *SHAPE)
        expected = flatten_outputs(model(images))
        got = flatten_outputs(traced(images))
    # A TracerWarning means a Python-side decision was frozen into the trace.
    backbone_dir = str(Path(FAN.__module__.replace('.', '/')).parent)
    frozen = [f'{w.filename}:{w.lineno}: {w.message}' for w in caught
              if issubclass(w.category, torch.jit.TracerWarning) and backbone_dir in w.filename]
    assert frozen == []
    assert len(got) == len(expected)
    for ours, theirs in zip(got, expected):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_models_can_be_inspected():
    """hasattr / inspect.getmembers used to raise RuntimeError on a classification FAN
    (its dense_channels / dense_strides properties)."""
    classifier = _classifier(TINY_HYBRID)
    for model in (classifier, classifier.backbone, _dense(TINY_HYBRID)):
        members = dict(inspect.getmembers(model))
        assert 'forward' in members
    assert classifier.backbone.dense_channels is None and classifier.backbone.dense_strides is None


def test_assert_close_names_the_outputs_beyond_the_bound():
    differences = [OutputDifference('onnxruntime', 1, 'logits', 2e-6, 3.0),
                   OutputDifference('onnxruntime', 3, 'logits', 5e-3, 3.0)]
    assert_close(differences[:1])
    with pytest.raises(ExportCheckError, match='batch 3, logits: max abs difference 0.005'):
        assert_close(differences)


# ---------------------------------------------------------------------- from configs
def _classifier_config(arch: dict) -> Config:
    return Config(dict(
        default_scope='mmpretrain',
        model=dict(type='TokenLabelingClassifier', backbone=dict(type='FAN', arch=arch),
                   head=dict(type='TokenLabelingHead', num_classes=5))))


def _save_classifier(tmp_path: Path, arch: dict) -> Path:
    path = tmp_path / 'classifier.pth'
    model = _classifier(arch)
    _perturb_layer_scales(model)
    torch.save({'meta': {}, 'state_dict': model.state_dict()}, path)
    return path


def test_dense_backbone_of_a_segmentation_config(tmp_path):
    """The backbone of an mmseg config (SyncBN, as the configs train it) from a segmentor
    checkpoint: its backbone.* keys, the decode head's left out."""
    backbone = _dense(TINY_HYBRID)
    _perturb_layer_scales(backbone)
    checkpoint = tmp_path / 'segmentor.pth'
    torch.save({'state_dict': {**{f'backbone.{k}': v for k, v in backbone.state_dict().items()},
                               'decode_head.conv_seg.weight': torch.zeros(3, 8, 1, 1)}},
               checkpoint)
    cfg = Config(dict(default_scope='mmseg', model=dict(
        type='EncoderDecoder',
        backbone=dict(type='FAN', arch=TINY_HYBRID, dense=True, norm_cfg=dict(type='SyncBN'),
                      init_cfg=dict(type='Pretrained', checkpoint='missing.pth')))))
    target = load_export_model(cfg, str(checkpoint))
    assert target.output_names == ('level0', 'level1', 'level2', 'level3')
    assert target.load_report.unused == ['decode_head.conv_seg.weight']
    images = torch.randn(2, 3, *SHAPE)
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in target.module.modules())
    with torch.no_grad():
        for ours, theirs in zip(target.module(images), backbone(images)):
            torch.testing.assert_close(ours, theirs)


def test_dense_export_of_a_classifier_checkpoint(tmp_path):
    checkpoint = _save_classifier(tmp_path, TINY_HYBRID)
    target = load_export_model(_classifier_config(TINY_HYBRID), str(checkpoint), dense=True)
    assert target.module.dense and target.module.learnable_downsample is None
    assert target.module.pos_embed.paired_frequencies  # the classifier's encoding
    assert target.load_report.new == []
    # A detection backbone needs its learnable_downsample, which the file lacks.
    det_cfg = Config(dict(default_scope='mmdet', model=dict(
        type='CascadeRCNN', backbone=dict(type='FAN', arch=TINY_HYBRID, dense=True))))
    with pytest.raises(CheckpointMismatchError,
                       match='leaves weights of the dense FAN backbone of the mmdet CascadeRCNN '
                       'at their initial values: learnable_downsample.bias'):
        load_export_model(det_cfg, str(checkpoint))


TOOL = REPO / 'tools' / 'deployment' / 'pytorch2onnx.py'


def test_tool_exports_and_checks_a_classifier(tmp_path):
    checkpoint = _save_classifier(tmp_path, TINY_VIT)
    config = tmp_path / 'tiny.py'
    _classifier_config(TINY_VIT).dump(str(config))
    onnx_path, program_path = tmp_path / 'tiny.onnx', tmp_path / 'tiny.pt2'
    result = subprocess.run(
        [sys.executable, str(TOOL), str(config), str(checkpoint), '--out', str(onnx_path),
         '--shape', *map(str, SHAPE), '--torch-export', str(program_path)],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert 'Exporting the TokenLabelingClassifier (class logits): images (N, 3, 32, 48) -> ' \
           'logits' in log
    for runtime in ('onnxruntime', 'torch.export'):
        for batch in BATCHES:
            assert f'{runtime} vs PyTorch, batch {batch}, logits: max abs difference' in log
    assert 'OK: every output within --atol 0.0001 of PyTorch at batch sizes 1 3.' in log
    assert onnx_path.is_file() and program_path.is_file()


def test_tool_refuses_bad_options_and_checkpoints_that_do_not_fit(tmp_path, capsys):
    main = runpy.run_path(str(TOOL))['main']
    checkpoint = _save_classifier(tmp_path, TINY_VIT)
    config = tmp_path / 'tiny.py'
    _classifier_config(TINY_HYBRID).dump(str(config))
    out = str(tmp_path / 'never.onnx')
    with pytest.raises(SystemExit) as exit_info:
        main([str(config), str(checkpoint), '--out', out, '--atol', '-1'])
    assert exit_info.value.code == 2
    assert '--atol must be a finite number > 0, got -1.0' in capsys.readouterr().err
    with pytest.raises(SystemExit, match=re.escape(f'pytorch2onnx.py: {checkpoint} does not '
                                                   'fit TokenLabelingClassifier')):
        main([str(config), str(checkpoint), '--out', out])
    assert not Path(out).exists()
