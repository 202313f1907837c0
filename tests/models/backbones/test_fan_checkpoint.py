"""FAN checkpoint reading, official <-> stl_mm key mapping, the one loading API and its
reports and errors."""
import ast
import logging
import os
import pickle
from pathlib import Path

import pytest
import torch
from mmengine.logging import MMLogger
from mmpretrain.registry import MODELS

import stl_mm  # noqa: F401  (registers the classifier)
from stl_mm.models.backbones import FAN, fan_checkpoint
from stl_mm.models.backbones.fan_checkpoint import (CheckpointMismatchError, CheckpointReadError,
                                                    guess_presets, load_checkpoint,
                                                    official_to_stl_mm, read_checkpoint,
                                                    stl_mm_to_official)
from stl_mm.models.backbones.fan_presets import ARCH_ZOO, resolve_arch

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


# --------------------------------------------------------------------- unreadable files
def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _good_bytes(tmp_path: Path) -> bytes:
    torch.save({'state_dict': _official_state_dict()}, tmp_path / 'good.pth')
    return (tmp_path / 'good.pth').read_bytes()


UNREADABLE = {
    'missing': (lambda tmp: tmp / 'absent.pth', 'no such file'),
    'directory': (lambda tmp: tmp, 'is a directory'),
    'empty': (lambda tmp: _write(tmp / 'empty.pth', b''), 'empty'),
    'truncated': (lambda tmp: _write(tmp / 'cut.pth', _good_bytes(tmp)[:3000]),
                  'not a complete PyTorch zip archive'),
    'random bytes': (lambda tmp: _write(tmp / 'noise.pth', os.urandom(4096)),
                     'not a PyTorch checkpoint'),
    'a list': (lambda tmp: torch.save([1, 2], tmp / 'list.pth') or tmp / 'list.pth',
               'holds a list, not a checkpoint'),
    'no state dict': (lambda tmp: torch.save({'epoch': 3}, tmp / 'meta.pth') or tmp / 'meta.pth',
                      "no state dict under state_dict, state_dict_ema, model or model_ema"),
    'refused by safe loading': (
        lambda tmp: torch.save({'state_dict': pickle.PicklingError('x')}, tmp / 'obj.pth')
        or tmp / 'obj.pth', 'safe loading (torch.load(weights_only=True)) refuses the object '
        'pickle.PicklingError'),
}


@pytest.mark.parametrize('case', sorted(UNREADABLE))
def test_unreadable_files_give_one_error_naming_file_and_reason(tmp_path, case):
    make, reason = UNREADABLE[case]
    path = str(make(tmp_path))
    for load in (lambda: read_checkpoint(path),
                 lambda: load_checkpoint(FAN(MINI), path),
                 FAN(MINI, init_cfg=dict(type='Pretrained', checkpoint=path)).init_weights):
        with pytest.raises(CheckpointReadError) as error:
            load()
        assert str(error.value).startswith(f'Cannot read checkpoint {path}: ')
        assert reason in str(error.value)


def test_random_bytes_are_never_torch_raw_errors(tmp_path):
    """Random files make torch raise UnpicklingError, IndexError ('pop from empty list')..."""
    generator = torch.Generator().manual_seed(0)
    torch_errors = set()
    for index in range(24):
        noise = torch.randint(0, 256, (200, ), generator=generator, dtype=torch.uint8)
        path = _write(tmp_path / f'noise{index}.pth', bytes(noise.tolist()))
        with pytest.raises(CheckpointReadError,
                           match=f'{path}: it is not a PyTorch checkpoint') as error:
            read_checkpoint(str(path))
        torch_errors.add(type(error.value.__cause__))
    assert {pickle.UnpicklingError, IndexError} <= torch_errors


# --------------------------------------------------------------------- one strict loading API
def _classifier(num_classes: int = 5, arch=MINI, device: str = 'cpu'):
    with torch.device(device):
        return MODELS.build(dict(
            type='TokenLabelingClassifier', mode='labeler', backbone=dict(type='FAN', arch=arch),
            head=dict(type='TokenLabelingHead', num_classes=num_classes,
                      in_channels=FAN.resolve_arch(arch)['embed_dims'][-1])))


class _Messages(logging.Handler):
    """Collects what the current mmengine logger logs."""

    def __init__(self) -> None:
        super().__init__()
        self.messages = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_load_checkpoint_reads_official_files_ema_first_and_logs_it(official_file):
    path, raw, ema = official_file
    model = _classifier()
    logger, log = MMLogger.get_current_instance(), _Messages()
    logger.addHandler(log)
    try:
        report = load_checkpoint(model, str(path))
    finally:
        logger.removeHandler(log)
    assert "EMA weights ('state_dict_ema')" in report.source and 'official layout' in report.source
    assert report.unused == [] and report.new == []
    torch.testing.assert_close(model.backbone.cls_token, ema['cls_token'])
    torch.testing.assert_close(model.head.head.weight, ema['head.weight'])
    assert (f"load_checkpoint into TokenLabelingClassifier: {path}: EMA weights "
            "('state_dict_ema'), official layout; loaded 135 tensors") in log.messages[0]
    report = load_checkpoint(model, str(path), use_ema=False)
    torch.testing.assert_close(model.head.aux_head.bias, raw['aux_head.bias'])


def test_head_of_another_class_count_is_refused_with_a_true_hint(official_file):
    path, _, _ = official_file
    with pytest.raises(CheckpointMismatchError) as error:
        load_checkpoint(_classifier(num_classes=10), str(path))
    message = str(error.value)
    assert message.startswith(f'{path} does not fit TokenLabelingClassifier')
    assert 'head.head.weight: checkpoint (5, 32) vs model (10, 32)' in message
    assert 'head.aux_head.bias: checkpoint (5,) vs model (10,)' in message
    # The backbone fits, so the hint points at the head, not at the arch.
    assert 'Its backbone has the architecture of the model' in message
    assert "build the model with the file's arch" not in message
    assert 'load_from_reinit=head.' in message


def test_fan_of_another_width_is_refused_naming_both_presets(tmp_path, official_fixtures):
    fixture = torch.load(official_fixtures / 'fan_tiny_12_p16_224.pt', weights_only=True)
    path = tmp_path / 'tiny.pth'
    torch.save(fixture['checkpoint'], path)
    num_classes = fixture['checkpoint']['state_dict']['head.weight'].shape[0]
    with pytest.raises(CheckpointMismatchError) as error:
        load_checkpoint(_classifier(num_classes, 'small', device='meta'), str(path))
    message = str(error.value)
    assert 'backbone.cls_token: checkpoint (1, 1, 192) vs model (1, 1, 384)' in message
    assert ('The file looks like FAN preset fan_tiny_12_p16_224; the model is FAN preset '
            'fan_small_12_p16_224') in message


def test_official_checkpoint_with_a_block_missing_is_refused(tmp_path, official_fixtures):
    fixture = torch.load(official_fixtures / 'fan_tiny_12_p16_224.pt', weights_only=True)
    state_dict = {key: value for key, value in fixture['checkpoint']['state_dict'].items()
                  if not key.startswith('blocks.5.')}
    path = tmp_path / 'damaged.pth'
    torch.save({'state_dict': state_dict}, path)
    with pytest.raises(CheckpointMismatchError) as error:
        load_checkpoint(_classifier(state_dict['head.weight'].shape[0], 'tiny', device='meta'),
                        str(path))
    message = str(error.value)
    assert 'missing from the checkpoint: backbone.blocks.5.' in message
    assert 'The file matches no FAN preset' in message and 'fan_tiny_12_p16_224' in message


def test_reinit_names_the_keys_allowed_to_differ_and_reports_them(official_file):
    path, _, ema = official_file
    model = _classifier(num_classes=10)
    head_before = model.head.head.weight.clone()
    report = load_checkpoint(model, str(path), reinit='head.')
    assert report.new == ['head.aux_head.bias', 'head.aux_head.weight', 'head.head.bias',
                          'head.head.weight']
    assert 'kept initialised (not loaded): head.aux_head.bias' in str(report)
    torch.testing.assert_close(model.backbone.cls_token, ema['cls_token'])
    assert torch.equal(model.head.head.weight, head_before)
    # Only the keys named may differ; a typo names nothing and is refused.
    with pytest.raises(CheckpointMismatchError, match='head.aux_head.weight'):
        load_checkpoint(_classifier(num_classes=10), str(path), reinit='head.head.')
    with pytest.raises(ValueError, match="prefix 'heads.' names no key of the model"):
        load_checkpoint(_classifier(num_classes=10), str(path), reinit=['heads.'])


def test_checkpoint_module_does_not_import_the_backbone():
    """fan.py imports fan_checkpoint; the reverse (even inside a function) would be a cycle."""
    tree = ast.parse(Path(fan_checkpoint.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
    assert not {'fan', 'stl_mm.models.backbones.fan'} & imported, imported
    assert FAN.arch_zoo is ARCH_ZOO and FAN.resolve_arch('tiny') == resolve_arch('tiny')
