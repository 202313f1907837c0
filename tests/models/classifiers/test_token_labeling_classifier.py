"""TokenLabelingClassifier: modes, official loss parity, the detached teacher, official loads."""
import copy
import re

import pytest
import torch
import torch.nn as nn
from mmengine.model import ExponentialMovingAverage
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import stl_mm  # noqa: F401
from stl_mm.models.backbones import FAN
from stl_mm.models.backbones.fan_checkpoint import (CheckpointMismatchError, load_checkpoint,
                                                    stl_mm_to_official)
from stl_mm.models.classifiers import FrozenTeacher, TokenLabelingClassifier

NUM_CLASSES = 6
TINY_FAN = dict(embed_dims=16, depth=1, num_heads=2, patch_size=16, cls_attn_layers=1)


def fan_classifier_cfg(mode='plain', patch_size=16, num_classes=NUM_CLASSES, **kwargs):
    return dict(
        type='TokenLabelingClassifier',
        mode=mode,
        backbone=dict(type='FAN', arch=dict(TINY_FAN, patch_size=patch_size)),
        head=dict(type='TokenLabelingHead', num_classes=num_classes, in_channels=16),
        **kwargs)


def labelled(labels):
    return [DataSample().set_gt_label(label) for label in labels]


def frozen(model: nn.Module) -> nn.Module:
    return model.requires_grad_(False).eval()


# --------------------------------------------------------------------- official parity
class FixedFeatures(nn.Module):
    """Backbone stand-in returning stored features, so logits can be set exactly."""

    def __init__(self, cls_feat: torch.Tensor, patch_map: torch.Tensor) -> None:
        super().__init__()
        self.cls_feat, self.patch_map = cls_feat, patch_map

    def forward(self, inputs: torch.Tensor):
        return ((self.cls_feat, self.patch_map), )


class FixedTeacher(nn.Module):

    def __init__(self, token_logits: torch.Tensor) -> None:
        super().__init__()
        self.token_logits = token_logits

    def forward(self, inputs: torch.Tensor):
        return inputs.new_zeros(inputs.shape[0], self.token_logits.shape[1]), self.token_logits


def to_grid(token_major: torch.Tensor) -> torch.Tensor:
    num, tokens, classes = token_major.shape
    side = int(tokens**0.5)
    return token_major.transpose(1, 2).reshape(num, classes, side, side)


def identity_head_classifier(official, mode, **kwargs):
    """Classifier whose logits are exactly the official student logits."""
    classes = official['num_classes']
    backbone = FixedFeatures(official['student_cls_logits'],
                             to_grid(official['student_aux_logits']))
    model = TokenLabelingClassifier(
        backbone=backbone,
        head=dict(type='TokenLabelingHead', num_classes=classes, in_channels=classes),
        mode=mode,
        **kwargs)
    for linear in (model.head.head, model.head.aux_head):
        linear.weight.data.copy_(torch.eye(classes))
        linear.bias.data.zero_()
    return model


@pytest.fixture(scope='module')
def official(official_fixtures):
    return torch.load(official_fixtures / 'token_label_loss.pt', weights_only=True)


def test_labeler_loss_matches_official_stage1(official):
    model = identity_head_classifier(official, 'labeler')
    losses = model(torch.zeros(4, 3, 8, 8), labelled(official['labels']), mode='loss')
    assert set(losses) == {'loss_cls', 'loss_token'}
    torch.testing.assert_close(losses['loss_cls'] + losses['loss_token'], official['stage1_loss'])


@pytest.mark.parametrize('target_mode,key', [('argmax', 'argmax'), ('softmax', 'softmax'),
                                             ('gumbel', 'gumbel_seed801')])
@pytest.mark.parametrize('dense_weight', [0.5, 2.0])
def test_student_loss_matches_official_stage2(official, target_mode, key, dense_weight):
    model = identity_head_classifier(
        official, 'student',
        token_loss=dict(type='GumbelTokenLabelLoss', mode=target_mode, loss_weight=dense_weight))
    model.set_teacher(FixedTeacher(to_grid(official['teacher_aux_logits'])))
    torch.manual_seed(801)
    losses = model(torch.zeros(4, 3, 8, 8), labelled(official['labels']), mode='loss',
                   teacher_inputs=torch.zeros(4, 3, 8, 8))
    torch.testing.assert_close(losses['loss_cls'] + losses['loss_token'],
                               official['stage2_losses'][f'{key}_dense{dense_weight}'])


def test_teacher_class_count_mismatch_is_a_clear_error(official):
    model = identity_head_classifier(official, 'student')
    model.set_teacher(FixedTeacher(torch.randn(4, 12, 3, 3)))
    with pytest.raises(ValueError, match='teacher predicts 12 classes, the student 10'):
        model(torch.zeros(4, 3, 8, 8), labelled(official['labels']), mode='loss',
              teacher_inputs=torch.zeros(4, 3, 8, 8))


# --------------------------------------------------------------------- real FAN
def test_class_and_token_logits_and_plain_loss():
    model = MODELS.build(fan_classifier_cfg('plain'))
    images = torch.randn(2, 3, 32, 48)
    cls_logits, token_logits = model.class_and_token_logits(images)
    assert cls_logits.shape == (2, NUM_CLASSES)
    assert token_logits.shape == (2, NUM_CLASSES, 2, 3)
    samples = labelled(torch.tensor([1, 5]))
    losses = model(images, samples, mode='loss')
    assert list(losses) == ['loss_cls']
    torch.testing.assert_close(losses['loss_cls'], model.head.class_loss(cls_logits, samples))


@pytest.mark.parametrize('mode,head_options', [
    ('plain', dict(with_token_head=False)),
    ('plain', dict()),
    ('labeler', dict()),
    ('student', dict()),
    ('plain', dict(eval_with_token_logits=True)),
])
def test_tensor_mode_returns_the_prediction_logits_as_one_tensor(mode, head_options):
    """mmpretrain's contract (Grad-CAM, FLOP counters, ONNX export): ``model(x)`` is one
    (N, K) tensor. Plain mode used to return ``(logits, None)``, the others a pair."""
    cfg = fan_classifier_cfg(mode)
    cfg['head'].update(head_options)
    model = MODELS.build(cfg).eval()
    images = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        logits = model(images)
        scores = torch.stack([s.pred_score for s in model(images, mode='predict')])
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, NUM_CLASSES)
    torch.testing.assert_close(logits.softmax(1), scores)


def test_class_and_token_logits_needs_the_token_head():
    cfg = fan_classifier_cfg('plain')
    cfg['head']['with_token_head'] = False
    model = MODELS.build(cfg)
    with pytest.raises(ValueError, match=r'class_and_token_logits: this model has no token '
                       r'head \(with_token_head=False\)'):
        model.class_and_token_logits(torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize('stage,expected', [('pre_logits', (2, 16)), ('backbone', None),
                                            ('neck', None)])
def test_extract_feat_stages(stage, expected):
    """``stage='pre_logits'`` gives the (N, C) class-token features (it gave the pair)."""
    model = MODELS.build(fan_classifier_cfg('labeler')).eval()
    images = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        feats = model.extract_feat(images, stage=stage)
        (cls_feat, patch_map), = model.backbone(images)
    if expected is not None:
        assert isinstance(feats, torch.Tensor) and feats.shape == expected
        torch.testing.assert_close(feats, cls_feat)
        torch.testing.assert_close(model.head.head(feats), model(images))
    else:
        (feat_cls, feat_map), = feats
        torch.testing.assert_close(feat_cls, cls_feat)
        assert feat_map.shape == patch_map.shape == (2, 16, 2, 3)


def test_labeler_loss_averages_token_logits():
    model = MODELS.build(fan_classifier_cfg('labeler', labeler_weight=0.7))
    images = torch.randn(2, 3, 32, 32)
    samples = labelled(torch.tensor([0, 3]))
    _, token_logits = model.class_and_token_logits(images)
    losses = model(images, samples, mode='loss')
    expected = 0.7 * model.head.class_loss(token_logits.mean(dim=(2, 3)), samples)
    torch.testing.assert_close(losses['loss_token'], expected)
    sum(losses.values()).backward()
    assert model.head.aux_head.weight.grad.abs().sum() > 0


def test_student_with_heterogeneous_fan_teacher():
    student = MODELS.build(fan_classifier_cfg('student'))
    teacher = frozen(MODELS.build(fan_classifier_cfg('labeler', patch_size=8)))
    student.set_teacher(teacher)
    images, teacher_images = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    samples = labelled(torch.tensor([2, 4]))
    _, teacher_tokens = teacher.class_and_token_logits(teacher_images)
    assert teacher_tokens.shape[-2:] == (4, 4)  # the student grid is 2x2

    _, student_tokens = student.class_and_token_logits(images)
    torch.manual_seed(3)
    targets = student.token_loss.make_targets(teacher_tokens, (2, 2))
    torch.manual_seed(3)
    losses = student(images, samples, mode='loss', teacher_inputs=teacher_images)
    expected = -(targets * student_tokens.log_softmax(1)).sum(1).mean()
    torch.testing.assert_close(losses['loss_token'], expected)
    sum(losses.values()).backward()
    assert student.head.aux_head.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_teacher_runs_in_inference_mode_and_the_amp_dtype():
    student = MODELS.build(fan_classifier_cfg('student'))
    student.set_teacher(frozen(MODELS.build(fan_classifier_cfg('labeler'))))
    images = torch.randn(2, 3, 32, 32)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        teacher_tokens = student.teacher_token_logits(images)
        losses = student(images, labelled(torch.tensor([1, 3])), mode='loss',
                         teacher_inputs=images)
    # No autograd state at all for the teacher, and its forward ran in the AMP dtype.
    assert teacher_tokens.is_inference() and not teacher_tokens.requires_grad
    assert teacher_tokens.dtype == torch.bfloat16
    assert losses['loss_token'].dtype == torch.float32
    sum(losses.values()).backward()
    assert student.head.aux_head.weight.grad.abs().sum() > 0


def test_student_mode_errors():
    student = MODELS.build(fan_classifier_cfg('student'))
    images, samples = torch.randn(2, 3, 32, 32), labelled(torch.tensor([0, 1]))
    with pytest.raises(RuntimeError, match='FrozenTeacherHook') as error:
        student(images, samples, mode='loss', teacher_inputs=images)
    # The message names where every config sets the teacher.
    assert 'default_hooks.teacher=' in str(error.value)
    assert 'custom_hooks' not in str(error.value)
    student.set_teacher(frozen(MODELS.build(fan_classifier_cfg('plain'))))
    with pytest.raises(ValueError, match='teacher_inputs.*DualView'):
        student(images, samples, mode='loss')
    no_tokens = fan_classifier_cfg('plain')
    no_tokens['head']['with_token_head'] = False
    student.set_teacher(frozen(MODELS.build(no_tokens)))
    with pytest.raises(ValueError, match=r'no token head.*with_token_head=True.*'
                       r'default_hooks\.teacher\.model\.head'):
        student(images, samples, mode='loss', teacher_inputs=images)


def test_bad_configs_are_rejected():
    with pytest.raises(ValueError, match='mode must be one of'):
        MODELS.build(fan_classifier_cfg('teacher'))
    cfg = fan_classifier_cfg('labeler')
    cfg['head']['with_token_head'] = False
    with pytest.raises(ValueError, match='with_token_head=True'):
        MODELS.build(cfg)


def test_teacher_is_outside_the_module_tree():
    student = MODELS.build(fan_classifier_cfg('student'))
    own_parameters = {id(p) for p in student.parameters()}
    own_keys = set(student.state_dict())
    teacher = frozen(MODELS.build(fan_classifier_cfg('plain', patch_size=8)))
    student.set_teacher(teacher)

    assert student.teacher is teacher
    assert {id(p) for p in student.parameters()} == own_parameters
    assert set(student.state_dict()) == own_keys
    assert all(module is not teacher for module in student.modules())

    student.train()
    assert student.training and not teacher.training
    assert all(not m.training for m in teacher.modules())
    # Whoever switches the teacher to training mode, it forwards in eval mode.
    teacher.train()
    student.teacher_token_logits(torch.randn(1, 3, 32, 32))
    assert all(not m.training for m in teacher.modules())

    # mmengine's EMA deep-copies the model: the copy shares the teacher, never copies it.
    ema = ExponentialMovingAverage(student)
    assert ema.module.teacher is teacher
    assert {id(p) for p in ema.parameters()}.isdisjoint({id(p) for p in teacher.parameters()})
    assert copy.deepcopy(student).teacher is teacher


def test_teacher_is_not_wrapped_by_ddp(tmp_path):
    from mmengine.model import MMDistributedDataParallel
    torch.distributed.init_process_group(
        'gloo', init_method=f'file://{tmp_path / "rendezvous"}', rank=0, world_size=1)
    try:
        student = MODELS.build(fan_classifier_cfg('student'))
        teacher = frozen(MODELS.build(fan_classifier_cfg('plain')))
        student.set_teacher(teacher)
        wrapped = MMDistributedDataParallel(student)
        wrapped_parameters = {id(p) for p in wrapped.parameters()}
        assert wrapped_parameters == {id(p) for p in student.parameters()}
        assert wrapped_parameters.isdisjoint({id(p) for p in teacher.parameters()})
        assert wrapped.module.teacher is teacher
    finally:
        torch.distributed.destroy_process_group()


def test_eval_with_token_logits_option():
    model = MODELS.build(fan_classifier_cfg('plain', eval_with_token_logits=True)).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        cls_logits, token_logits = model.class_and_token_logits(images)
        scores = torch.stack([s.pred_score for s in model(images, mode='predict')])
        logits = model(images)
    expected = cls_logits + 0.5 * token_logits.flatten(2).max(2).values
    torch.testing.assert_close(scores, expected.softmax(1))
    # Tensor mode gives the logits the model predicts with.
    torch.testing.assert_close(logits, expected)


# --------------------------------------------------------------------- official checkpoints
def test_official_state_dict_loads_through_the_loading_api(tmp_path):
    source = MODELS.build(fan_classifier_cfg('student'))
    official = stl_mm_to_official(source.state_dict())
    assert 'cls_token' in official and 'aux_head.weight' in official
    torch.save(official, tmp_path / 'official.pth')
    target = MODELS.build(fan_classifier_cfg('student'))
    report = load_checkpoint(target, str(tmp_path / 'official.pth'))
    assert 'plain state dict, official layout' in report.source
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_official_checkpoint_reproduces_official_outputs(official_fixtures, tmp_path):
    fixture = torch.load(official_fixtures / 'mini_hybrid_token.pt', weights_only=True)
    path = tmp_path / 'official.pth'
    torch.save(fixture['checkpoint'], path)
    model = TokenLabelingClassifier(
        backbone=dict(type='FAN',
                      arch=FAN.arch_from_official(fixture['official_kwargs'],
                                                  fixture['hybrid_stem'])),
        head=dict(type='TokenLabelingHead', num_classes=10,
                  in_channels=fixture['official_kwargs']['embed_dim']),
        mode='student')
    load_checkpoint(model, str(path))  # what tools/test.py and load_from call
    with torch.no_grad():
        cls_logits, token_logits = model.eval().class_and_token_logits(fixture['input'])
    expected = fixture['outputs']
    torch.testing.assert_close(cls_logits, expected['cls_logits'], atol=1e-4, rtol=0)
    torch.testing.assert_close(token_logits.flatten(2).transpose(1, 2), expected['aux_logits'],
                               atol=1e-4, rtol=0)


@pytest.mark.parametrize('options,expected', [
    (dict(mode='labeler', labeler_weight=float('nan')),
     'labeler_weight must be a finite number >= 0, got nan.'),
    (dict(mode='labeler', labeler_weight=-1.0),
     'labeler_weight must be a finite number >= 0, got -1.0.'),
    (dict(mode='student', token_loss=dict(type='GumbelTokenLabelLoss', loss_weight=-2)),
     'token_loss.loss_weight must be a finite number >= 0, got -2.'),
])
def test_impossible_loss_weights_are_refused(options, expected):
    """Negative or NaN loss weights used to build a model that trains on them."""
    with pytest.raises(ValueError, match=re.escape(expected)):
        MODELS.build(fan_classifier_cfg(**options))


def test_non_finite_teacher_logits_stop_the_student_naming_the_teacher_checkpoint():
    """NaN teacher logits used to become token label 0 everywhere with a finite loss."""
    student = MODELS.build(fan_classifier_cfg('student'))
    logits = torch.randn(2, NUM_CLASSES, 2, 2)
    logits[1, :, 0, 1] = float('nan')
    student.set_teacher(FrozenTeacher(FixedTeacher(logits),
                                      checkpoint='work_dirs/labeler/epoch_3.pth'))
    images, samples = torch.randn(2, 3, 32, 32), labelled(torch.tensor([0, 1]))
    with pytest.raises(FloatingPointError) as error:
        student(images, samples, mode='loss', teacher_inputs=images)
    assert str(error.value).startswith(
        'The teacher loaded from work_dirs/labeler/epoch_3.pth returned non-finite token '
        f'logits (NaN or inf in {NUM_CLASSES} of {logits.numel()} values)')
    assert 'default_hooks.teacher.checkpoint' in str(error.value)
    logits[1, :, 0, 1] = 0.0
    assert torch.isfinite(student(images, samples, mode='loss', teacher_inputs=images)[
        'loss_token'])


# --------------------------------------------------------------------- other loaders
def official_timm_file(path, source: nn.Module) -> dict:
    """A timm-layout official file of ``source``: raw weights (off by one) and EMA weights
    (``source``'s), official key names."""
    ema = stl_mm_to_official(source.state_dict())
    raw = {key: value + 1 for key, value in ema.items()}
    torch.save(dict(state_dict=raw, state_dict_ema=ema, epoch=1), path)
    return ema


@pytest.mark.parametrize('loader', ['mmengine', 'runner'])
def test_mmengines_loaders_refuse_official_files_naming_them(tmp_path, loader):
    """mmengine's load_checkpoint (get_model(pretrained=FILE), the inferencers) and
    Runner.load_checkpoint (load_from in mmpretrain's tools/test.py) used to load an official
    file non-strict into nothing: warnings and a randomly initialised model."""
    from mmengine.runner import Runner
    from mmengine.runner import load_checkpoint as mmengine_load_checkpoint
    path = tmp_path / 'fan_official.pth.tar'
    official_timm_file(path, MODELS.build(fan_classifier_cfg('student')))
    model = MODELS.build(fan_classifier_cfg('student'))
    before = copy.deepcopy(model.state_dict())
    message = (rf'{re.escape(str(path))} is an official FAN / STL checkpoint \(a custom FAN .*'
               rf'leave TokenLabelingClassifier randomly initialised and would take the raw '
               rf'weights, not the EMA ones\. Convert it: python tools/model_converters/'
               rf'fan_to_stl_mm\.py {re.escape(str(path))} OUT\.pth .*fan_checkpoint\.'
               rf"load_checkpoint\(model, '{re.escape(str(path))}'\)")
    with pytest.raises(CheckpointMismatchError, match=message):
        if loader == 'mmengine':
            mmengine_load_checkpoint(model, str(path), map_location='cpu')
        else:
            Runner(model=model, work_dir=str(tmp_path / 'work')).load_checkpoint(str(path))
    for key, value in before.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_official_weights_loaded_directly_are_refused_and_ours_pass(tmp_path):
    """Without mmengine around (no file to name) the message says what is being loaded; the
    stl_mm layout loads as before, into the model and into mmengine's EMA copy of it."""
    source = MODELS.build(fan_classifier_cfg('student'))
    model = MODELS.build(fan_classifier_cfg('student'))
    with pytest.raises(CheckpointMismatchError, match=r'The checkpoint being loaded \(pretrained'
                       r'= / load_from=\) is an official FAN / STL checkpoint'):
        model.load_state_dict(stl_mm_to_official(source.state_dict()))
    model.load_state_dict(source.state_dict())
    ema = ExponentialMovingAverage(model)
    ema.load_state_dict(ExponentialMovingAverage(source).state_dict())
    for key, value in source.state_dict().items():
        assert torch.equal(ema.module.state_dict()[key], value), key


def test_stl_mm_loader_still_takes_the_ema_weights_of_official_files(tmp_path):
    path = tmp_path / 'fan_official.pth.tar'
    source = MODELS.build(fan_classifier_cfg('student'))
    official_timm_file(path, source)
    model = MODELS.build(fan_classifier_cfg('student'))
    report = load_checkpoint(model, str(path))
    assert "EMA weights ('state_dict_ema'), official layout" in report.source
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
