"""tools/model_converters/fan_to_stl_mm.py (fan_checkpoint.convert_checkpoint): official ->
stl_mm -> official round trip."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stl_mm.models.backbones import FAN
from stl_mm.models.backbones.fan_checkpoint import CheckpointError, convert_checkpoint

REPO = Path(__file__).resolve().parents[2]
CONVERTER = REPO / 'tools' / 'model_converters' / 'fan_to_stl_mm.py'


@pytest.fixture
def official(official_fixtures, tmp_path):
    fixture = torch.load(official_fixtures / 'mini_hybrid_token.pt', weights_only=True)
    path = tmp_path / 'official.pth.tar'
    torch.save(fixture['checkpoint'], path)
    return fixture, path


def _convert(*args: str, returncode: int = 0) -> str:
    result = subprocess.run([sys.executable, str(CONVERTER), *args], capture_output=True,
                            text=True, cwd=REPO, timeout=300)
    assert result.returncode == returncode, result.stderr
    return result.stdout + result.stderr


def test_round_trip_reproduces_the_official_checkpoint(official, tmp_path):
    fixture, src = official
    ours, back = tmp_path / 'ours.pth', tmp_path / 'back.pth'
    convert_checkpoint(str(src), str(ours))
    converted = torch.load(ours, weights_only=True)
    assert converted['meta']['arch'].startswith('a custom FAN')  # a custom mini model
    assert 'head.aux_head.weight' in converted['state_dict']
    convert_checkpoint(str(ours), str(back), reverse=True)
    restored = torch.load(back, weights_only=True)['state_dict']
    original = fixture['checkpoint']['state_dict_ema']
    assert restored.keys() == original.keys()
    assert all(torch.equal(restored[k], original[k]) for k in original)


def test_converted_checkpoint_loads_and_reproduces_outputs(official, tmp_path):
    fixture, src = official
    dst = tmp_path / 'ours.pth'
    convert_checkpoint(str(src), str(dst))
    arch = FAN.arch_from_official(fixture['official_kwargs'], fixture['hybrid_stem'])
    model = FAN(arch, init_cfg=dict(type='Pretrained', checkpoint=str(dst), prefix='backbone.'))
    model.init_weights()
    weights = torch.load(dst, weights_only=True)['state_dict']
    with torch.no_grad():
        (cls_feat, _), = model.eval()(fixture['input'])
    logits = torch.nn.functional.linear(cls_feat, weights['head.head.weight'],
                                        weights['head.head.bias'])
    torch.testing.assert_close(logits, fixture['outputs']['cls_logits'], atol=1e-4, rtol=0)


def test_wrong_direction_is_refused(official, tmp_path):
    _, src = official
    with pytest.raises(CheckpointError, match='drop --reverse'):
        convert_checkpoint(str(src), str(tmp_path / 'x.pth'), reverse=True)


def test_command_line(official, tmp_path):
    _, src = official
    dst = tmp_path / 'cli.pth'
    assert "weights from 'state_dict'" in _convert(str(src), str(dst), '--no-ema')
    assert dst.is_file()
    absent = tmp_path / 'absent.pth'
    log = _convert(str(absent), str(dst), returncode=1)
    assert f'fan_to_stl_mm.py: Cannot read checkpoint {absent}: no such file' in log
