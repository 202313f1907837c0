"""FAN backbone: parity with the official golden outputs, presets, options and registries."""
import importlib
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from stl_mm.models.backbones import FAN
from stl_mm.models.backbones.fan_checkpoint import official_to_stl_mm, read_checkpoint
from stl_mm.models.backbones.fan_layers import ConvMlp, FourierPositionalEncoding, LayerNorm2d

TINY_VIT = dict(embed_dims=32, depth=2, num_heads=2, patch_size=16, dense_blocks=(0, ))
TINY_HYBRID = dict(embed_dims=32, depth=2, num_heads=2,
                   hybrid_stem=dict(depths=[1, 1], dims=[8, 16]), dense_blocks=(1, ))
TINY_SE = dict(TINY_VIT, se_mlp=True)
TINY_XL = dict(embed_dims=[32, 32, 48], depth=3, num_heads=[2, 2, 4],
               hybrid_stem=dict(depths=[1, 1], dims=[8, 16]), dense_blocks=(0, ))

GOLDEN_FIXTURES = ['mini_vit', 'mini_hybrid_token', 'mini_hybrid_xl_style', 'mini_dense_hybrid',
                   'fan_tiny_12_p16_224', 'fan_tiny_8_p4_hybrid_token']
PRESET_DENSE_CHANNELS = {  # (feat_downsample=True, feat_downsample=False), official facts
    't-hybrid': ((128, 256, 192, 768), (128, 256, 192, 192)),
    's-hybrid': ((128, 256, 384, 768), (128, 256, 384, 384)),
    'b-hybrid': ((128, 256, 448, 768), (128, 256, 448, 448)),
    'l-hybrid': ((128, 256, 480, 768), (128, 256, 480, 480)),
    'xl-hybrid': ((128, 256, 528, 768), (128, 256, 528, 768)),
    'tiny': ((192, ) * 4, (192, ) * 4),
    'small': ((384, ) * 4, (384, ) * 4),
    'small-se': ((384, ) * 4, (384, ) * 4),
    'base': ((448, ) * 4, (448, ) * 4),
    'large': ((480, ) * 4, (480, ) * 4),
}


def _load_fixture(folder: Path, name: str) -> dict:
    return torch.load(folder / f'{name}.pt', weights_only=True)


def _fixture_arch(fixture: dict):
    if 'official_kwargs' in fixture:
        return FAN.arch_from_official(fixture['official_kwargs'], fixture['hybrid_stem'])
    return fixture['name']


@pytest.fixture(scope='module')
def manifest(official_fixtures) -> dict:
    return json.loads((official_fixtures / 'manifest.json').read_text())


@pytest.mark.parametrize('name', GOLDEN_FIXTURES)
def test_golden_outputs_through_pretrained_init(name, official_fixtures, tmp_path):
    fixture = _load_fixture(official_fixtures, name)
    path = tmp_path / f'{name}.pth'
    torch.save(fixture['checkpoint'], path)
    dense = 'features' in fixture['outputs']
    model = FAN(_fixture_arch(fixture), dense=dense,
                init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    model.eval()
    assert model.load_report.new == []
    with torch.no_grad():
        outputs = model(fixture['input'])
    expected = fixture['outputs']
    if dense:
        assert len(outputs) == len(expected['features']) == 4
        for ours, theirs in zip(outputs, expected['features']):
            assert ours.shape == theirs.shape
            torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
        return
    cls_feat, patch_map = outputs[0]
    weights = official_to_stl_mm(read_checkpoint(str(path))[0])
    head = nn.Linear(cls_feat.shape[1], expected['cls_logits'].shape[1])
    head.load_state_dict({'weight': weights['head.head.weight'], 'bias': weights['head.head.bias']})
    head.float()
    torch.testing.assert_close(head(cls_feat), expected['cls_logits'], atol=1e-4, rtol=0)
    if 'aux_logits' in expected:
        aux_head = nn.Linear(cls_feat.shape[1], expected['aux_logits'].shape[2])
        aux_head.load_state_dict({'weight': weights['head.aux_head.weight'],
                                  'bias': weights['head.aux_head.bias']})
        tokens = patch_map.flatten(2).transpose(1, 2)
        torch.testing.assert_close(aux_head.float()(tokens), expected['aux_logits'], atol=1e-4,
                                   rtol=0)


def test_dense_positional_encoding_follows_official_detection_code(official_fixtures):
    """The dense backbone's Fourier frequencies differ from classification's; both matter."""
    fixture = _load_fixture(official_fixtures, 'mini_dense_hybrid')
    weights = {k[len('backbone.'):]: v
               for k, v in official_to_stl_mm(fixture['checkpoint']['state_dict']).items()}
    outputs = {}
    for paired in (False, True):
        model = FAN(_fixture_arch(fixture), dense=True, paired_fourier_frequencies=paired)
        model.load_state_dict(weights)
        with torch.no_grad():
            outputs[paired] = model.eval()(fixture['input'])[2]
    torch.testing.assert_close(outputs[False], fixture['outputs']['features'][2], atol=1e-4,
                               rtol=0)
    assert (outputs[True] - fixture['outputs']['features'][2]).abs().max() > 1e-3


@pytest.mark.parametrize('name', FAN.official_names)
def test_preset_matches_official_manifest(name, manifest):
    entry = manifest[name]
    official = {key: torch.empty(shape, device='meta') for key, shape in entry['state_dict']}
    mapped = official_to_stl_mm(official)
    with torch.device('meta'):
        model = FAN(name)
    ours = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    backbone = {key[len('backbone.'):]: tuple(value.shape) for key, value in mapped.items()
                if key.startswith('backbone.')}
    assert backbone == ours  # every official backbone key consumed with its shape, none missing
    heads = {key: value for key, value in mapped.items() if key.startswith('head.')}
    expected_heads = {'head.head.weight', 'head.head.bias'}
    if name.endswith('_token'):
        expected_heads |= {'head.aux_head.weight', 'head.aux_head.bias'}
    assert set(heads) == expected_heads
    # The official count is the backbone plus the class head (and the token head).
    head_params = sum(math.prod(value.shape) for value in heads.values())
    assert sum(p.numel() for p in model.parameters()) + head_params == entry['params']


@pytest.mark.parametrize('alias, name', [('t-hybrid', 'fan_tiny_8_p4_hybrid'),
                                         ('tiny-hybrid', 'fan_tiny_8_p4_hybrid_token'),
                                         ('s-hybrid', 'fan_small_12_p4_hybrid'),
                                         ('b-hybrid', 'fan_base_16_p4_hybrid'),
                                         ('l-hybrid', 'fan_large_16_p4_hybrid_token'),
                                         ('xl-hybrid', 'fan_Xlarge_16_p4_hybrid'),
                                         ('tiny', 'fan_tiny_12_p16_224'),
                                         ('small', 'fan_small_12_p16_224'),
                                         ('small-se', 'fan_small_12_p16_224_se_attn'),
                                         ('base', 'fan_base_18_p16_224'),
                                         ('large', 'fan_large_24_p16_224')])
def test_aliases_name_the_same_architecture(alias, name):
    assert FAN.resolve_arch(alias) == FAN.resolve_arch(name)


@pytest.mark.parametrize('arch', sorted(PRESET_DENSE_CHANNELS))
def test_preset_dense_channels(arch):
    for feat_downsample, expected in zip((True, False), PRESET_DENSE_CHANNELS[arch]):
        with torch.device('meta'):
            model = FAN(arch, dense=True, feat_downsample=feat_downsample)
        assert model.dense_channels == expected
        hybrid = 'hybrid' in arch
        last_stride = 32 if hybrid and (feat_downsample or arch == 'xl-hybrid') else 16
        assert model.dense_strides == ((4, 8, 16, last_stride) if hybrid else (16, ) * 4)


@pytest.mark.parametrize('arch, feat_downsample', [(TINY_HYBRID, True), (TINY_HYBRID, False),
                                                   (TINY_VIT, True), (TINY_XL, True)])
def test_dense_outputs_have_documented_shapes(arch, feat_downsample):
    model = FAN(arch, dense=True, feat_downsample=feat_downsample).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        outputs = model(x)
    assert len(outputs) == len(model.dense_channels)
    for out, channels, stride in zip(outputs, model.dense_channels, model.dense_strides):
        assert out.shape == (1, channels, 64 // stride, 96 // stride)


def test_out_indices_select_levels():
    model = FAN(TINY_HYBRID, dense=True, out_indices=(1, 3)).eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outputs] == [16, 768] == list(model.dense_channels)
    with pytest.raises(ValueError, match='out_indices'):
        FAN(TINY_HYBRID, dense=True, out_indices=(4, ))


@pytest.mark.parametrize('arch', [TINY_VIT, TINY_HYBRID, TINY_SE, TINY_XL])
def test_classification_forward_backward_non_square(arch):
    model = FAN(arch)
    model.init_weights()
    x = torch.randn(2, 3, 64, 96)
    (cls_feat, patch_map), = model(x)
    grid = (2, 3) if arch is TINY_XL else (4, 6)
    assert cls_feat.shape == (2, model.num_features)
    assert patch_map.shape == (2, model.num_features, *grid)
    (cls_feat.sum() + patch_map.square().mean()).backward()
    no_grad = [name for name, p in model.named_parameters() if p.grad is None]
    assert no_grad == []


@pytest.mark.parametrize('arch', [TINY_HYBRID, TINY_XL], ids=['hybrid', 'xl-downsample'])
def test_block_outputs_are_token_tensors_for_grad_cam(arch):
    """Grad-CAM (vis_cam.py --target-layers backbone.blocks.N) hooks a block's output and
    needs a tensor; the blocks used to return (tokens, grid). The XLarge pattern halves the
    grid inside block 1 (64x96 input: 4x6 grid, then 2x3 after the downsample)."""
    model = FAN(arch).eval()
    outputs = []
    for block in model.blocks:
        block.register_forward_hook(lambda module, args, out: outputs.append(out))
    with torch.no_grad():
        (_, patch_map), = model(torch.randn(2, 3, 64, 96))
    widths = model.arch_settings['embed_dims']
    grids = [(4, 6), (2, 3), (2, 3)] if arch is TINY_XL else [(4, 6), (4, 6)]
    assert model.num_extra_tokens == 0  # no class token before the patch tokens
    for index, (out, grid) in enumerate(zip(outputs, grids)):
        assert isinstance(out, torch.Tensor), type(out)
        assert out.shape == (2, grid[0] * grid[1], widths[min(index + 1, model.depth - 1)])
        assert model.blocks[index].output_grid(grids[index - 1] if index else (4, 6)) == grid
    assert patch_map.shape[2:] == grids[-1]


def test_overlap_downsample_grid_of_odd_sides():
    """The grid a width-changing block reports is the one its stride-2 conv produces."""
    model = FAN(TINY_XL).eval()
    block = model.blocks[1]
    tokens = torch.randn(1, 5 * 7, 32)
    with torch.no_grad():
        out = block(tokens, (5, 7))
    assert block.output_grid((5, 7)) == (3, 4)
    assert out.shape == (1, 3 * 4, 48)


def test_se_mlp_preset_runs():
    """The official forward of fan_small_12_p16_224_se_attn fails; ours runs."""
    model = FAN('small-se').eval()
    with torch.no_grad():
        (cls_feat, patch_map), = model(torch.randn(1, 3, 32, 48))
    assert cls_feat.shape == (1, 384) and patch_map.shape == (1, 384, 2, 3)
    assert torch.isfinite(patch_map).all()


@pytest.mark.parametrize('hw', [(64, 84), (50, 84), (7, 7)])
def test_fourier_encoding_covers_the_actual_grid(hw):
    """1024x1344 / 800x1344 / 112x112 inputs at stride 16: the encoding matches each grid."""
    encoding = FourierPositionalEncoding(8)
    pos = encoding(hw)
    assert pos.shape == (1, hw[0] * hw[1], 8)
    # Each axis is normalised to (0, 2*pi]: the last row/column encode the same angle.
    raw = encoding._axis_encoding(hw[1], torch.device('cpu'))
    assert torch.allclose(raw[-1], encoding._axis_encoding(2 * hw[1], torch.device('cpu'))[-1],
                          atol=1e-5)


def test_with_cp_gives_same_gradients():
    torch.manual_seed(0)
    plain = FAN(TINY_HYBRID)
    plain.init_weights()
    checkpointed = FAN(TINY_HYBRID, with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 48)
    grads = []
    for model in (plain, checkpointed):
        model.train()
        (cls_feat, patch_map), = model(x)
        (cls_feat.square().sum() + patch_map.mean()).backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5)


def test_stem_mlp_gives_the_same_result_in_cpu_inference_chunks():
    mlp = ConvMlp(6, 24)
    mlp.cpu_inference_chunk_elements = 24 * 7  # 7 rows per chunk: 5 chunks, the last short
    x = torch.randn(2, 4, 4, 6)
    with_grad = mlp(x)
    with torch.inference_mode():
        chunked = mlp(x)
    expected = F.linear(F.gelu(F.linear(x, mlp.fc1.weight[:, :, 0, 0], mlp.fc1.bias)),
                        mlp.fc2.weight[:, :, 0, 0], mlp.fc2.bias)
    assert chunked.shape == with_grad.shape == (2, 4, 4, 6)
    torch.testing.assert_close(with_grad, expected)
    torch.testing.assert_close(chunked, expected)


def test_with_cp_recomputes_stem_fan_and_class_attention_blocks():
    model = FAN(TINY_HYBRID, with_cp=True)
    model.train()
    watched = {
        'stem block': model.patch_embed.backbone.stages[1].blocks[0].conv_dw,
        'FAN block': model.blocks[0].norm1,
        'class-attention block': model.cls_attn_blocks[0].norm1,
    }
    calls = dict.fromkeys(watched, 0)
    for name, module in watched.items():
        module.register_forward_hook(
            lambda *args, name=name: calls.__setitem__(name, calls[name] + 1))
    (cls_feat, patch_map), = model(torch.randn(2, 3, 32, 32))
    assert calls == dict.fromkeys(watched, 1)
    (cls_feat.sum() + patch_map.sum()).backward()
    assert calls == dict.fromkeys(watched, 2)  # each block ran again in the backward pass
    model.eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    assert calls == dict.fromkeys(watched, 3)


def test_unbiased_layernorm2d_normalises_with_the_unbiased_variance():
    norm = LayerNorm2d(6, unbiased=True)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = torch.randn(2, 6, 3, 4) * 3 + 1
    var, mean = torch.var_mean(x, dim=1, keepdim=True)  # divisor C - 1
    expected = (x - mean) / torch.sqrt(var + norm.eps) * norm.weight[:, None, None] + \
        norm.bias[:, None, None]
    torch.testing.assert_close(norm(x), expected)
    torch.testing.assert_close(
        norm.forward_channels_last(x.permute(0, 2, 3, 1)), expected.permute(0, 2, 3, 1))


def test_unbiased_layernorm2d_is_safe_in_half_precision():
    """The stem's var_mean norm must not overflow in fp16 (squares above 65504)."""
    norm = LayerNorm2d(8, unbiased=True)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = torch.randn(2, 8, 3, 5) * 400 + 100
    reference = norm(x)
    half = norm(x.half())
    assert half.dtype == torch.float16 and torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), reference, atol=2e-2, rtol=1e-2)


def test_frozen_stages_freeze_embedding_and_blocks():
    model = FAN(TINY_HYBRID, frozen_stages=1)
    model.train()
    for name, param in model.named_parameters():
        frozen = name.startswith(('patch_embed.', 'pos_embed.', 'blocks.0.'))
        assert param.requires_grad is not frozen, name
    assert not model.patch_embed.training and not model.blocks[0].training
    assert model.blocks[1].training
    everything = FAN(TINY_VIT, frozen_stages=3).train()
    assert not any(p.requires_grad for p in everything.parameters())
    with pytest.raises(ValueError, match='frozen_stages'):
        FAN(TINY_VIT, frozen_stages=4)


def test_norm_eval_keeps_batchnorm_in_eval():
    model = FAN(TINY_VIT, norm_eval=True).train()
    assert all(not m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert model.blocks[0].attn.training


def test_layer_depth_for_layerwise_lr_decay():
    model = FAN(TINY_VIT)
    assert model.get_layer_depth('backbone.patch_embed.proj.0.0.weight', 'backbone.') == (0, 4)
    assert model.get_layer_depth('backbone.blocks.1.attn.q.weight', 'backbone.') == (2, 4)
    assert model.get_layer_depth('backbone.cls_attn_blocks.0.gamma1', 'backbone.') == (3, 4)
    assert model.get_layer_depth('head.head.weight', 'backbone.') == (3, 4)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(KeyError, match='Presets'):
        FAN('fan_huge')
    with pytest.raises(KeyError, match='Unknown FAN arch keys'):
        FAN(dict(TINY_VIT, embed_dim=32))
    with pytest.raises(ValueError, match='multiples of 16'):
        FAN(TINY_VIT)(torch.randn(1, 3, 40, 48))
    with pytest.raises(RuntimeError, match='dense=True'):
        FAN(TINY_VIT).dense_channels


@pytest.mark.parametrize('codebase', ['mmpretrain', 'mmseg', 'mmdet'])
def test_built_from_each_registry(codebase):
    registry = importlib.import_module(f'{codebase}.registry')
    dense = codebase != 'mmpretrain'
    model = registry.MODELS.build(dict(type='FAN', arch=TINY_HYBRID, dense=dense))
    assert isinstance(model, FAN)
    with torch.no_grad():
        outputs = model.eval()(torch.randn(1, 3, 32, 32))
    assert len(outputs) == (1 if codebase == 'mmpretrain' else 4)


def test_compiles_without_graph_breaks():
    model = FAN(TINY_HYBRID).eval()
    x = torch.randn(1, 3, 32, 48)
    compiled = torch.compile(model, backend='eager', fullgraph=True)
    with torch.no_grad():
        expected, = model(x)
        got, = compiled(x)
    torch.testing.assert_close(got[0], expected[0])


def test_dense_outputs_follow_out_indices_order_and_bad_level_choices_are_refused():
    model = FAN(TINY_HYBRID, dense=True).eval()
    picked = FAN(TINY_HYBRID, dense=True, out_indices=(3, 0, 2)).eval()
    picked.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        every, chosen = model(x), picked(x)
    for got, level in zip(chosen, (3, 0, 2)):
        torch.testing.assert_close(got, every[level])
    assert picked.dense_channels == tuple(model.dense_levels[i][0] for i in (3, 0, 2))
    with pytest.raises(ValueError, match='distinct indices of the 2 FAN blocks, in increasing'):
        FAN(dict(TINY_VIT, dense_blocks=(1, 0)), dense=True)
    with pytest.raises(ValueError, match='distinct'):
        FAN(TINY_VIT, dense=True, dense_blocks=(0, 0))
    with pytest.raises(ValueError, match='build with dense=True'):
        FAN(TINY_VIT, out_indices=(0, ))
