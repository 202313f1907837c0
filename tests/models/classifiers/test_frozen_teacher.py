"""FrozenTeacher: the one owner of the STL teacher (build, strict load, freeze, checks, hints)."""
import re
from pathlib import Path

import pytest
import torch
from mmpretrain.registry import MODELS

import stl_mm  # noqa: F401
from stl_mm.engine.hooks import FrozenTeacherHook
from stl_mm.models.backbones.fan_checkpoint import CheckpointMismatchError, CheckpointReadError
from stl_mm.models.classifiers import FrozenTeacher, token_logits_of
from stl_mm.models.classifiers.frozen_teacher import missing_teacher_hint

REPO = Path(__file__).resolve().parents[3]
TINY_FAN = dict(embed_dims=16, depth=1, num_heads=2, patch_size=16, cls_attn_layers=1)


def teacher_cfg(num_classes: int = 4, embed_dims: int = 16) -> dict:
    return dict(type='TokenLabelingClassifier', mode='labeler',
                backbone=dict(type='FAN', arch=dict(TINY_FAN, embed_dims=embed_dims)),
                head=dict(type='TokenLabelingHead', num_classes=num_classes,
                          in_channels=embed_dims))


def save(path: Path, cfg: dict) -> dict:
    state_dict = MODELS.build(cfg).state_dict()
    torch.save({'state_dict': state_dict}, path)
    return state_dict


def test_from_config_loads_freezes_and_keeps_eval_mode(tmp_path):
    path = tmp_path / 'teacher.pth'
    saved = save(path, teacher_cfg())
    teacher = FrozenTeacher.from_config(teacher_cfg(), str(path))
    assert all(torch.equal(teacher.module.state_dict()[k], v) for k, v in saved.items())
    assert all(not p.requires_grad for p in teacher.module.parameters())
    assert 'loaded from' in teacher.describe() and "weights from 'state_dict'" in teacher.describe()
    teacher.module.train()  # whatever happens to it, the teacher forwards in eval mode
    logits = teacher.token_logits(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 4, 2, 2) and logits.is_inference()
    assert not any(m.training for m in teacher.module.modules())


def test_a_teacher_of_another_size_gets_the_fit_message(tmp_path):
    path = tmp_path / 'wide.pth'
    save(path, teacher_cfg(embed_dims=32))
    with pytest.raises(CheckpointMismatchError) as error:
        FrozenTeacher.from_config(teacher_cfg(), str(path))
    message = str(error.value)
    assert message.startswith(f'{path} does not fit TokenLabelingClassifier')
    assert 'backbone.cls_token: checkpoint (1, 1, 32) vs model (1, 1, 16)' in message
    assert len(message.splitlines()) == 1 and len(message) < 2500


def test_non_finite_teacher_weights_are_refused(tmp_path):
    path = tmp_path / 'diverged.pth'
    state_dict = save(path, teacher_cfg())
    state_dict['head.aux_head.weight'][0, 0] = float('nan')
    state_dict['backbone.cls_token'][..., 0] = float('inf')
    torch.save({'state_dict': state_dict}, path)
    with pytest.raises(ValueError, match=rf'Teacher checkpoint {re.escape(str(path))} holds '
                       r'non-finite weights \(NaN or inf\) in 2 tensors'):
        FrozenTeacher.from_config(teacher_cfg(), str(path))


def test_class_count_is_checked_against_the_student():
    teacher = FrozenTeacher(MODELS.build(teacher_cfg(num_classes=5)))
    student = MODELS.build(dict(teacher_cfg(), mode='student'))
    with pytest.raises(ValueError, match=r'teacher predicts 5 classes, the student 4.*'
                       r'default_hooks\.teacher\.model\.head\.num_classes'):
        teacher.check_student(student)


@pytest.mark.parametrize('checkpoint,command', [
    ('work_dirs/fan_t_token_labeler/epoch_350.pth',
     'python tools/train.py configs/stl/fan_t_token_labeler.py'),
    ('work_dirs/fan_demo_token_labeler/epoch_10.pth',
     'python tools/train.py configs/stl/demo/fan_demo_token_labeler.py'),
    ('work_dirs/demo/stage1_token_labeler/epoch_3.pth',
     'python tools/demo.py --work-dir work_dirs/demo'),
    ('/data/teachers/mine.pth', 'python tools/train.py CONFIG'),
])
def test_missing_teacher_names_commands_and_configs_that_exist(checkpoint, command, tmp_path,
                                                               monkeypatch):
    # Relative to an empty folder: a `make demo` run in the checkout must not make them exist.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointReadError) as error:
        FrozenTeacher.from_config(teacher_cfg(), checkpoint)
    message = str(error.value)
    assert message.startswith(f'Cannot read checkpoint {checkpoint}: no such file.')
    assert command in message
    assert 'python tools/model_converters/fan_to_stl_mm.py SRC DST' in message
    assert '--cfg-options default_hooks.teacher.checkpoint=PATH' in message
    configs = re.findall(r'configs/[\w/]+\.py', message)
    assert configs and all((REPO / config).is_file() for config in configs), configs
    assert missing_teacher_hint(checkpoint) in message


@pytest.mark.parametrize('settings,error,expected', [
    (dict(checkpoint=''), ValueError,
     "default_hooks.teacher.checkpoint must be a non-empty str (the teacher checkpoint file), "
     "got ''."),
    (dict(checkpoint=None), ValueError, 'default_hooks.teacher.checkpoint must be a non-empty str'),
    (dict(use_ema='False'), TypeError,
     "default_hooks.teacher.use_ema must be a bool (True: EMA weights when the checkpoint has "
     "them), got 'False'."),
    (dict(model='fan_tiny'), TypeError,
     'default_hooks.teacher.model must be a model config dict, got str.'),
])
def test_impossible_teacher_settings_are_refused_before_loading(settings, error, expected):
    arguments = dict(dict(model=teacher_cfg(), checkpoint='teacher.pth', use_ema=True),
                     **settings)
    for build in (FrozenTeacherHook, FrozenTeacher.from_config):
        with pytest.raises(error) as raised:
            build(*arguments.values())
        assert str(raised.value).startswith(expected), build


class _TokenMap(torch.nn.Module):
    """A non-classifier teacher: ``module(images)`` is the token-logit map itself."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images[:, :2, ::8, ::8] * 2


class _ClassesAndTokens(_TokenMap):
    """A teacher returning ``(class logits, token logits)``."""

    def forward(self, images: torch.Tensor):
        return images.mean((2, 3)), super().forward(images)


def test_the_teacher_protocol_for_classifiers_and_other_modules():
    """A TokenLabelingClassifier's forward gives one (N, K) tensor (mmpretrain's contract), so
    the teacher's token logits come from class_and_token_logits(); other modules keep the
    plain protocol (a map, or a tuple ending with one)."""
    images = torch.randn(2, 3, 32, 32)
    classifier = MODELS.build(teacher_cfg()).eval()
    with torch.no_grad():
        expected = classifier.class_and_token_logits(images)[1]
        assert classifier(images).shape == (2, 4)
    torch.testing.assert_close(FrozenTeacher(classifier).token_logits(images), expected)
    torch.testing.assert_close(token_logits_of(classifier, images), expected)
    for module in (_TokenMap(), _ClassesAndTokens()):
        torch.testing.assert_close(FrozenTeacher(module).token_logits(images),
                                   images[:, :2, ::8, ::8] * 2)
    with pytest.raises(TypeError, match=r'token logits \(N, K, h, w\).*got \(2, 3\)'):
        token_logits_of(torch.nn.Identity(), images.mean((2, 3)))
