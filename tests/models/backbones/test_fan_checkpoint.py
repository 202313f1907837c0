"""FAN checkpoint reading, official <-> stl_mm key mapping, and loading reports."""
import pytest
import torch

from stl_mm.models.backbones import FAN
from stl_mm.models.backbones.fan_checkpoint import (CheckpointMismatchError, guess_presets,
                                                    official_to_stl_mm, read_checkpoint,
                                                    stl_mm_to_official)

MINI = dict(embed_dims=32, depth=2, num_heads=2, hybrid_stem=dict(depths=[1, 1], dims=[8, 16]),
            dense_blocks=(1, ))


def _official_state_dict(seed: int = 0, num_classes: int = 5, arch=MINI) -> dict:
    """An official-layout state dict with random values (backbone + class and token heads)."""
    torch.manual_seed(seed)
    model = FAN(arch)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v
             for k, v in model.state_dict().items()}
    for key in [k for k in state if k.endswith('running_var')]:
        state[key] = state[key].abs() + 0.5
    width = model.num_features
    state.update({'head.weight': torch.randn(num_classes, width), 'head.bias': torch.randn(
        num_classes), 'aux_head.weight': torch.randn(num_classes, width),
                  'aux_head.bias': torch.randn(num_classes)})
    return state


def _forward(model: FAN, x: torch.Tensor):
    with torch.no_grad():
        return model.eval()(x)


@pytest.fixture
def official_file(tmp_path):
    raw, ema = _official_state_dict(0), _official_state_dict(1)
    path = tmp_path / 'official.pth.tar'
    torch.save({'epoch': 3, 'arch': 'mini', 'version': 2,
                'state_dict': {f'module.{k}': v for k, v in raw.items()},
                'state_dict_ema': ema}, path)
    return path, raw, ema


def test_read_checkpoint_prefers_ema_and_says_so(official_file):
    path, raw, ema = official_file
    state, info = read_checkpoint(str(path))
    assert 'EMA' in info and 'state_dict_ema' in info
    torch.testing.assert_close(state['cls_token'], ema['cls_token'])
    state, info = read_checkpoint(str(path), use_ema=False)
    assert "'state_dict'" in info and 'use_ema=False' in info
    assert set(state) == set(raw)  # 'module.' stripped
    torch.testing.assert_close(state['cls_token'], raw['cls_token'])


def test_read_checkpoint_mmengine_ema_hook_layout(tmp_path):
    averaged, raw = _official_state_dict(0), _official_state_dict(1)
    path = tmp_path / 'epoch_1.pth'
    torch.save({'meta': {'epoch': 1},
                'state_dict': {f'backbone.{k}': v for k, v in averaged.items()},
                'ema_state_dict': {'steps': torch.tensor(10),
                                   **{f'module.backbone.{k}': v for k, v in raw.items()}}}, path)
    state, info = read_checkpoint(str(path))
    assert 'EMA' in info
    torch.testing.assert_close(state['backbone.cls_token'], averaged['cls_token'])
    state, info = read_checkpoint(str(path), use_ema=False)
    assert 'non-EMA' in info and 'steps' not in state
    torch.testing.assert_close(state['backbone.cls_token'], raw['cls_token'])


def test_mapping_round_trip_is_exact():
    official = _official_state_dict()
    ours = official_to_stl_mm(official)
    assert {k for k in ours if not k.startswith('backbone.')} == {
        'head.head.weight', 'head.head.bias', 'head.aux_head.weight', 'head.aux_head.bias'}
    back = stl_mm_to_official(ours)
    assert back.keys() == official.keys()
    assert all(torch.equal(back[k], official[k]) for k in official)
    with pytest.raises(CheckpointMismatchError, match='no official counterpart'):
        stl_mm_to_official({**ours, 'neck.conv.weight': torch.zeros(1)})


def test_legacy_names_load_through_the_pre_hook():
    """pos_embeder.* and a fused class-attention qkv load into FAN.load_state_dict directly."""
    official = {k: v for k, v in _official_state_dict().items() if 'head' not in k}
    reference = FAN(MINI)
    reference.load_state_dict(official)
    legacy = dict(official)
    for key in [k for k in legacy if k.startswith('pos_embed.')]:
        legacy['pos_embeder.' + key[len('pos_embed.'):]] = legacy.pop(key)
    for i in range(2):
        for part in ('weight', 'bias'):
            legacy[f'cls_attn_blocks.{i}.attn.qkv.{part}'] = torch.cat(
                [legacy.pop(f'cls_attn_blocks.{i}.attn.{n}.{part}') for n in 'qkv'])
    model = FAN(MINI)
    model.load_state_dict(legacy)  # strict
    x = torch.randn(1, 3, 32, 48)
    torch.testing.assert_close(_forward(model, x)[0][0], _forward(reference, x)[0][0])
    # The same through a parent module (prefix 'backbone.').
    parent = torch.nn.Module()
    parent.backbone = FAN(MINI)
    parent.load_state_dict({f'backbone.{k}': v for k, v in legacy.items()})
    torch.testing.assert_close(parent.backbone.cls_token, reference.cls_token)


def test_pretrained_init_from_mmengine_checkpoint(tmp_path):
    official = _official_state_dict()
    path = tmp_path / 'ours.pth'
    torch.save({'meta': {}, 'state_dict': official_to_stl_mm(official)}, path)
    model = FAN(MINI, init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    model.init_weights()
    assert sorted(model.load_report.unused) == [
        'head.aux_head.bias', 'head.aux_head.weight', 'head.head.bias', 'head.head.weight']
    assert model.load_report.new == []
    torch.testing.assert_close(model.cls_token, official['cls_token'])


def test_use_ema_flag_from_backbone_or_init_cfg(official_file):
    path, raw, ema = official_file
    for kwargs, expected in [({}, ema), ({'use_ema': False}, raw)]:
        model = FAN(MINI, init_cfg=dict(type='Pretrained', checkpoint=str(path)), **kwargs)
        model.init_weights()
        torch.testing.assert_close(model.cls_token, expected['cls_token'])
    model = FAN(MINI, init_cfg=dict(type='Pretrained', checkpoint=str(path), use_ema=False))
    model.init_weights()
    torch.testing.assert_close(model.cls_token, raw['cls_token'])
    assert 'use_ema=False' in model.load_report.source


def test_classification_checkpoint_into_dense_backbone_reports_keys(official_file):
    path, _, ema = official_file
    model = FAN(MINI, dense=True, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    report = model.load_report
    assert sorted(report.unused) == ['head.aux_head.bias', 'head.aux_head.weight',
                                     'head.head.bias', 'head.head.weight', 'norm.bias',
                                     'norm.weight']
    assert report.new == ['learnable_downsample.bias', 'learnable_downsample.weight']
    torch.testing.assert_close(model.blocks[1].gamma2, ema['blocks.1.gamma2'])


def test_wrong_variant_fails_naming_keys_shapes_and_variant(tmp_path, official_fixtures):
    fixture = torch.load(official_fixtures / 'fan_tiny_12_p16_224.pt', weights_only=True)
    path = tmp_path / 'tiny.pth'
    torch.save(fixture['checkpoint'], path)
    with torch.device('meta'):
        model = FAN('small', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(CheckpointMismatchError) as error:
        model.init_weights()
    message = str(error.value)
    assert 'cls_token: checkpoint (1, 1, 192) vs model (1, 1, 384)' in message
    assert 'fan_tiny_12_p16_224' in message and 'fan_small_12_p16_224' in message
    # Fewer blocks in the model: the extra checkpoint blocks are named, not dropped silently.
    model = FAN(dict(MINI, depth=1), init_cfg=dict(type='Pretrained',
                                                   checkpoint=str(_save(tmp_path, MINI))))
    with pytest.raises(CheckpointMismatchError, match=r'not in the model: blocks\.1\.'):
        model.init_weights()


def _save(tmp_path, arch) -> str:
    path = tmp_path / 'mini.pth'
    torch.save({'state_dict': _official_state_dict(arch=arch)}, path)
    return str(path)


def test_missing_prefix_is_reported(tmp_path):
    path = tmp_path / 'other.pth'
    torch.save({'meta': {}, 'state_dict': {'neck.weight': torch.zeros(1)}}, path)
    model = FAN(MINI, init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    with pytest.raises(CheckpointMismatchError, match="no keys under prefix 'backbone.'"):
        model.init_weights()


def test_guess_presets_from_manifest(official_fixtures):
    import json
    manifest = json.loads((official_fixtures / 'manifest.json').read_text())
    for name in FAN.official_names:
        state = {k: torch.empty(s, device='meta') for k, s in manifest[name]['state_dict']}
        base = name[:-len('_token')] if name.endswith('_token') else name
        assert base in guess_presets(state), name
