"""STL's detection backbone (``out_norms``), the official detection names, and loading STL
detection checkpoints.

NVlabs/STL ``detection/models/fan.py`` is the FAN repository's detection backbone plus one
``nn.LayerNorm(C)`` per output (``out_norm0..3``, PyTorch's default eps 1e-5), applied over the
channels of each NCHW map (permuted to NHWC) after everything else. No golden output of it
exists, so the reference below applies that formula to the golden outputs of the FAN
repository's detection backbone (``mini_dense_hybrid.pt``): the two backbones share every
other line.
"""
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from stl_mm.models.backbones import FAN
from stl_mm.models.backbones.fan_checkpoint import CheckpointMismatchError, load_checkpoint

TINY_HYBRID = dict(embed_dims=32, depth=2, num_heads=2,
                   hybrid_stem=dict(depths=[1, 1], dims=[8, 16]), dense_blocks=(1, ))
STL_EPS = 1e-5  # nn.LayerNorm's default, which the official out_norm layers keep


def _golden(official_fixtures: Path) -> dict:
    return torch.load(official_fixtures / 'mini_dense_hybrid.pt', weights_only=True)


def _with_out_norms(state_dict: dict, channels, seed: int = 3) -> dict:
    """The official STL layout: ``out_norm{i}.weight/bias`` beside the backbone keys, with
    values far from the unit initialisation so that applying them (or not) shows."""
    generator = torch.Generator().manual_seed(seed)
    state = dict(state_dict)
    for index, width in enumerate(channels):
        state[f'out_norm{index}.weight'] = 1 + 0.5 * torch.randn(width, generator=generator)
        state[f'out_norm{index}.bias'] = torch.randn(width, generator=generator)
    return state


def _stl_reference(feature: torch.Tensor, state: dict, index: int) -> torch.Tensor:
    """The official STL forward: NCHW -> NHWC, LayerNorm over C, back to NCHW."""
    channels_last = feature.permute(0, 2, 3, 1)
    normed = F.layer_norm(channels_last, (feature.shape[1], ), state[f'out_norm{index}.weight'],
                          state[f'out_norm{index}.bias'], eps=STL_EPS)
    return normed.permute(0, 3, 1, 2)


def _fixture_arch(fixture: dict) -> dict:
    return FAN.arch_from_official(fixture['official_kwargs'], fixture['hybrid_stem'])


def _mmdet_checkpoint(backbone_state: dict) -> dict:
    """An mmdet detector checkpoint: ``backbone.*`` plus the neck and heads."""
    state = {f'backbone.{key}': value for key, value in backbone_state.items()}
    state['neck.lateral_convs.0.conv.weight'] = torch.zeros(256, 32, 1, 1)
    state['roi_head.bbox_head.0.fc_cls.weight'] = torch.zeros(81, 1024)
    return {'meta': {'epoch': 36}, 'state_dict': state}


@pytest.mark.parametrize('layout', ['mmdet detector', 'timm backbone'])
def test_stl_detection_checkpoint_loads_strictly_and_applies_its_output_norms(
        layout, official_fixtures, tmp_path):
    fixture = _golden(official_fixtures)
    golden = fixture['outputs']['features']
    state = _with_out_norms(fixture['checkpoint']['state_dict'], [f.shape[1] for f in golden])
    path = tmp_path / 'stl_det.pth'
    if layout == 'mmdet detector':
        torch.save(_mmdet_checkpoint(state), path)
        init_cfg = dict(type='Pretrained', checkpoint=str(path), prefix='backbone.')
    else:
        torch.save({'state_dict': state}, path)
        init_cfg = dict(type='Pretrained', checkpoint=str(path))
    model = FAN(_fixture_arch(fixture), dense=True, out_norms=True, init_cfg=init_cfg)
    model.init_weights()
    report = model.load_report
    assert report.new == []
    assert [key for key in report.unused if key.startswith('backbone.')] == []
    assert {f'out_norm{i}.{p}' for i in range(4) for p in ('weight', 'bias')} <= set(
        report.loaded)
    with torch.no_grad():
        outputs = model.eval()(fixture['input'])
    assert len(outputs) == 4
    for index, (ours, theirs) in enumerate(zip(outputs, golden)):
        expected = _stl_reference(theirs, state, index)
        assert (expected - theirs).abs().max() > 0.1  # the norms change the maps
        assert ours.is_contiguous()
        torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)


def test_out_norms_follow_the_levels_picked_by_out_indices(official_fixtures, tmp_path):
    """A four-norm checkpoint fits a backbone returning fewer levels: the norms of the levels
    left out are reported unused, the others still apply to their own level."""
    fixture = _golden(official_fixtures)
    golden = fixture['outputs']['features']
    state = _with_out_norms(fixture['checkpoint']['state_dict'], [f.shape[1] for f in golden])
    path = tmp_path / 'stl_det.pth'
    torch.save({'state_dict': state}, path)
    model = FAN(_fixture_arch(fixture), dense=True, out_norms=True, out_indices=(1, 2, 3))
    report = load_checkpoint(model, str(path))
    assert report.unused == ['out_norm0.bias', 'out_norm0.weight'] and report.new == []
    assert not hasattr(model, 'out_norm0')
    with torch.no_grad():
        outputs = model.eval()(fixture['input'])
    for ours, index in zip(outputs, (1, 2, 3)):
        torch.testing.assert_close(ours, _stl_reference(golden[index], state, index), atol=1e-4,
                                   rtol=0)


def test_without_out_norms_the_stl_file_is_refused_saying_to_set_them(tmp_path):
    model = FAN(TINY_HYBRID, dense=True)
    state = _with_out_norms(model.state_dict(), model.dense_channels)
    path = tmp_path / 'stl_det.pth'
    torch.save(_mmdet_checkpoint(state), path)
    backbone = FAN(TINY_HYBRID, dense=True,
                   init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    with pytest.raises(CheckpointMismatchError) as error:
        backbone.init_weights()
    message = str(error.value)
    assert 'not in the model: out_norm0.bias, out_norm0.weight' in message
    assert 'build the backbone with out_norms=True' in message
    # The old closing hints blamed the arch or a head; both are fine here.
    assert "with the file's arch" not in message and 'differ elsewhere' not in message
    assert 'load_from_reinit' not in message


class _Detector(nn.Module):
    """The shape of a whole detector: loading it has no task-specific allowances."""

    def __init__(self, out_norms: bool) -> None:
        super().__init__()
        self.backbone = FAN(TINY_HYBRID, dense=True, out_norms=out_norms)
        self.neck = nn.Conv2d(768, 4, 1)


def test_whole_detector_checkpoints_name_the_out_norms_setting_both_ways(tmp_path):
    for model_norms in (True, False):
        source = _Detector(out_norms=not model_norms)
        path = tmp_path / f'detector_{model_norms}.pth'
        torch.save({'meta': {}, 'state_dict': source.state_dict()}, path)
        with pytest.raises(CheckpointMismatchError) as error:
            load_checkpoint(_Detector(out_norms=model_norms), str(path))
        expected = 'out_norms=False' if model_norms else 'out_norms=True'
        assert f'build the backbone with {expected}' in str(error.value)
    path = tmp_path / 'detector_same.pth'
    source = _Detector(out_norms=True)
    torch.save({'meta': {}, 'state_dict': source.state_dict()}, path)
    report = load_checkpoint(_Detector(out_norms=True), str(path))
    assert report.new == report.unused == []


def test_imagenet_weights_leave_the_output_norms_at_unit_init_and_say_so(tmp_path):
    classifier = FAN(TINY_HYBRID)
    path = tmp_path / 'in1k.pth'
    torch.save({'state_dict': {**classifier.state_dict(), 'head.weight': torch.zeros(5, 32),
                               'head.bias': torch.zeros(5)}}, path)
    model = FAN(TINY_HYBRID, dense=True, out_norms=True)
    report = load_checkpoint(model, str(path))
    assert [key for key in report.new if key.startswith('out_norm')] == [
        f'out_norm{i}.{p}' for i in range(4) for p in ('bias', 'weight')]
    for level in range(4):
        norm = getattr(model, f'out_norm{level}')
        assert torch.equal(norm.weight, torch.ones_like(norm.weight))
        assert torch.equal(norm.bias, torch.zeros_like(norm.bias))
        assert norm.eps == STL_EPS


def test_out_norms_are_dense_extras():
    with pytest.raises(ValueError, match='out_norms=True is an option of the dense outputs'):
        FAN(TINY_HYBRID, out_norms=True)
    depth = TINY_HYBRID['depth']
    frozen = FAN(TINY_HYBRID, dense=True, out_norms=True, frozen_stages=depth + 1)
    assert not any(p.requires_grad for n, p in frozen.named_parameters() if 'out_norm' in n)
    partly = FAN(TINY_HYBRID, dense=True, out_norms=True, frozen_stages=depth)
    assert all(p.requires_grad for n, p in partly.named_parameters() if 'out_norm' in n)
    layer = partly.get_layer_depth('backbone.out_norm3.weight', 'backbone.')
    assert layer == (depth + 1, depth + 2)
    # Every output norm gets a gradient (DDP needs no find_unused_parameters).
    model = FAN(TINY_HYBRID, dense=True, out_norms=True)
    sum(out.sum() for out in model(torch.randn(1, 3, 64, 64))).backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if 'out_norm' in n)


@pytest.mark.parametrize('detection_name, classification_name, dense_block', [
    ('fan_base_12_p4_hybrid', 'fan_base_16_p4_hybrid', 15),
    ('fan_large_12_p4_hybrid', 'fan_large_16_p4_hybrid', 18),
])
def test_official_detection_names_are_presets(detection_name, classification_name, dense_block):
    """NVlabs FAN/STL detection/models/fan.py: base = 16 blocks of width 448, 8 heads, ConvNeXt
    stem depths (3, 3), out_index 15; large = 22 blocks of width 480, 10 heads, stem (3, 5),
    out_index 18."""
    assert FAN.official_detection_names[detection_name] == classification_name
    for name in (detection_name, detection_name.upper()):
        settings = FAN.resolve_arch(name)
        assert settings == FAN.resolve_arch(classification_name)
        assert settings['dense_blocks'] == (dense_block, )
    with torch.device('meta'):
        model = FAN(detection_name, dense=True, out_norms=True)
    width = FAN.resolve_arch(classification_name)['embed_dims'][-1]
    assert model.dense_channels == (128, 256, width, 768)
    assert [getattr(model, f'out_norm{i}').normalized_shape for i in range(4)] == [
        (128, ), (256, ), (width, ), (768, )]


def test_fan_swin_names_are_refused_as_another_architecture():
    with pytest.raises(KeyError, match='FAN-Swin model .* which stl_mm does not implement'):
        FAN('fan_swin_tiny_patch4_window7_224')
