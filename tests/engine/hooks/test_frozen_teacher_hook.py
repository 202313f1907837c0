"""FrozenTeacherHook: a real mmengine Runner trains a tiny STL student with a frozen teacher."""
import json
import types
import uuid
from pathlib import Path

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.logging import MMLogger
from mmengine.runner import Runner
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch.utils.data import DataLoader, Dataset

import stl_mm  # noqa: F401
from stl_mm.engine.hooks import FrozenTeacherHook
from stl_mm.models.backbones import FAN
from stl_mm.models.backbones.fan_checkpoint import CheckpointMismatchError, CheckpointReadError

NUM_CLASSES = 4
TINY_FAN = dict(embed_dims=16, depth=1, num_heads=2, cls_attn_layers=1)


def classifier_cfg(mode: str, patch_size: int, num_classes: int = NUM_CLASSES, **kwargs) -> dict:
    return dict(
        type='TokenLabelingClassifier',
        mode=mode,
        backbone=dict(type='FAN', arch=dict(TINY_FAN, patch_size=patch_size)),
        head=dict(type='TokenLabelingHead', num_classes=num_classes, in_channels=16),
        **kwargs)


# Student: 16-pixel patches (2x2 tokens on 32x32 images). Teacher: another FAN with 8-pixel
# patches (4x4 tokens), so the token labels are resampled: a heterogeneous teacher.
STUDENT = classifier_cfg(
    'student', 16,
    token_loss=dict(type='GumbelTokenLabelLoss', token_label_mix='aligned'),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
    data_preprocessor=dict(type='TokenLabelingDataPreprocessor', num_classes=NUM_CLASSES,
                           mean=[127.5] * 3, std=[64.] * 3))
TEACHER = classifier_cfg('labeler', 8)


class DualViewImages(Dataset):
    """Eight random 32x32 images, packed as PackDualViewInputs packs them."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (8, 3, 32, 32), generator=generator,
                                    dtype=torch.uint8)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        image = self.images[index]
        return dict(inputs=image, teacher_inputs=image.flip(-1).clone(),
                    data_samples=DataSample().set_gt_label(index % NUM_CLASSES))


class TeacherModeProbe(Hook):
    """Records the teacher's training flags at every iteration, after the runner's train()."""

    priority = 'LOWEST'

    def __init__(self) -> None:
        self.flags = []

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self.flags.append([m.training for m in runner.model.teacher.modules()])

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.flags.append([m.training for m in runner.model.teacher.modules()])


def save_teacher_checkpoint(path: Path) -> dict:
    torch.manual_seed(1)
    teacher = MODELS.build(TEACHER)
    # Non-trivial BatchNorm statistics, so an accidental train-mode forward would show.
    for module in teacher.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
    state_dict = {key: value.clone() for key, value in teacher.state_dict().items()}
    torch.save(dict(state_dict=state_dict, meta=dict(note='stage-1 teacher')), path)
    return state_dict


def make_runner(work_dir: Path, teacher_checkpoint: Path, max_iters: int, resume: bool = False,
                probe: Hook = None) -> Runner:
    loader = DataLoader(DualViewImages(), batch_size=4, shuffle=False,
                        collate_fn=lambda batch: dict(
                            inputs=[item['inputs'] for item in batch],
                            teacher_inputs=[item['teacher_inputs'] for item in batch],
                            data_samples=[item['data_samples'] for item in batch]))
    custom_hooks = [dict(type='EMAHook', momentum=0.1)] + ([probe] if probe else [])
    return Runner(
        model=STUDENT,
        work_dir=str(work_dir),
        experiment_name=f'stl_test_{uuid.uuid4().hex}',
        train_dataloader=loader,
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.05)),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
            logger=dict(type='LoggerHook', interval=1),
            teacher=dict(type='FrozenTeacherHook', model=TEACHER,
                         checkpoint=str(teacher_checkpoint))),
        custom_hooks=custom_hooks,
        default_scope='mmpretrain',
        resume=resume,
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        log_level='INFO')


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A 4-iteration stage-2 run, then its resumption to 6 iterations."""
    root = tmp_path_factory.mktemp('stl_stage2')
    teacher_path = root / 'teacher.pth'
    teacher_weights = save_teacher_checkpoint(teacher_path)
    probe = TeacherModeProbe()
    runner = make_runner(root / 'work', teacher_path, max_iters=4, probe=probe)
    student_before = {k: v.clone() for k, v in runner.model.state_dict().items()}
    runner.train()
    first = dict(runner=runner, probe=probe, teacher=runner.model.teacher,
                 student_before=student_before)
    resumed = make_runner(root / 'work', teacher_path, max_iters=6, resume=True)
    resumed.train()
    return types.SimpleNamespace(root=root, teacher_weights=teacher_weights, first=first,
                                 resumed=resumed)


def test_teacher_stays_frozen_and_in_eval_mode(trained):
    runner, teacher = trained.first['runner'], trained.first['teacher']
    assert runner.iter == 4
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, trained.teacher_weights[key]), key
    assert all(not p.requires_grad for p in teacher.parameters())
    flags = trained.first['probe'].flags
    assert len(flags) == 8 and not any(any(step) for step in flags)
    changed = [key for key, value in runner.model.state_dict().items()
               if not torch.equal(value, trained.first['student_before'][key])]
    assert any(key.startswith('head.aux_head') for key in changed)
    assert any(key.startswith('backbone.') for key in changed)


def test_teacher_is_not_in_optimizer_ema_or_checkpoint(trained):
    runner, teacher = trained.first['runner'], trained.first['teacher']
    teacher_ids = {id(p) for p in teacher.parameters()}
    optimized = {id(p) for group in runner.optim_wrapper.optimizer.param_groups
                 for p in group['params']}
    assert optimized == {id(p) for p in runner.model.parameters()}
    assert optimized.isdisjoint(teacher_ids)

    ema_hook = next(hook for hook in runner.hooks if type(hook).__name__ == 'EMAHook')
    assert {id(p) for p in ema_hook.ema_model.parameters()}.isdisjoint(teacher_ids)
    assert ema_hook.ema_model.module.teacher in (None, teacher)

    checkpoint = torch.load(Path(runner.work_dir) / 'iter_4.pth', map_location='cpu',
                            weights_only=False)
    student_keys = set(runner.model.state_dict())
    assert set(checkpoint['state_dict']) == student_keys
    assert set(checkpoint['ema_state_dict']) == {f'module.{k}' for k in student_keys} | {'steps'}


def test_heterogeneous_teacher_grid_is_resampled_and_logged(trained):
    runner = trained.first['runner']
    log = (Path(runner.log_dir) / f'{runner.timestamp}.log').read_text()
    assert 'resampling teacher token logits from a 4x4 grid to the student grid 2x2' in log
    assert log.count('resampling teacher token logits') == 1
    assert 'FrozenTeacherHook: teacher TokenLabelingClassifier' in log


def test_resume_continues_and_reloads_the_teacher(trained):
    resumed = trained.resumed
    assert resumed.iter == 6
    log = (Path(resumed.log_dir) / f'{resumed.timestamp}.log').read_text()
    assert 'resumed' in log.lower() and 'iter_4.pth' in log
    scalars = Path(resumed.log_dir) / 'vis_data' / 'scalars.json'
    logged = [json.loads(line) for line in scalars.read_text().splitlines()]
    assert [entry['iter'] for entry in logged] == [5, 6]
    assert all(entry['loss_token'] > 0 for entry in logged)
    teacher = resumed.model.teacher
    assert teacher is not trained.first['teacher']
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, trained.teacher_weights[key]), key


def test_missing_checkpoint_names_the_commands_to_run():
    hook = FrozenTeacherHook(model=TEACHER,
                             checkpoint='work_dirs/fan_t_token_labeler/epoch_350.pth')
    with pytest.raises(CheckpointReadError) as error:
        hook.build_teacher()
    message = str(error.value)
    assert 'python tools/train.py configs/stl/fan_t_token_labeler.py' in message
    assert 'python tools/model_converters/fan_to_stl_mm.py SRC DST' in message
    assert 'work_dirs/fan_t_token_labeler/epoch_350.pth' in message


def test_wrong_size_teacher_gets_the_fit_message_not_a_key_dump(tmp_path):
    """A teacher checkpoint of another FAN (here 8-pixel patches, the hook's 16) is refused by
    the loading API before training, with its one-paragraph message."""
    path = tmp_path / 'teacher.pth'
    save_teacher_checkpoint(path)
    hook = FrozenTeacherHook(model=classifier_cfg('labeler', 16), checkpoint=str(path))
    runner = types.SimpleNamespace(model=MODELS.build(classifier_cfg('student', 16)),
                                   logger=MMLogger.get_current_instance())
    with pytest.raises(CheckpointMismatchError) as error:
        hook.before_train(runner)
    message = str(error.value)
    assert message.startswith(f'{path} does not fit TokenLabelingClassifier')
    assert 'backbone.patch_embed.proj.' in message and len(message.splitlines()) == 1
    assert runner.model.teacher is None


def test_class_count_mismatch_fails_before_training(tmp_path):
    teacher_cfg = classifier_cfg('labeler', 16, num_classes=NUM_CLASSES + 1)
    path = tmp_path / 'teacher.pth'
    torch.save(dict(state_dict=MODELS.build(teacher_cfg).state_dict()), path)
    hook = FrozenTeacherHook(model=teacher_cfg, checkpoint=str(path))
    runner = types.SimpleNamespace(model=MODELS.build(classifier_cfg('student', 16)),
                                   logger=MMLogger.get_current_instance())
    with pytest.raises(ValueError, match='teacher predicts 5 classes, the student 4'):
        hook.before_train(runner)


def test_ema_weights_are_preferred_and_logged(tmp_path):
    raw = MODELS.build(TEACHER).state_dict()
    averaged = MODELS.build(TEACHER).state_dict()
    path = tmp_path / 'teacher.pth'
    torch.save(dict(state_dict=raw, state_dict_ema=averaged), path)
    key = 'head.aux_head.weight'
    assert not torch.equal(raw[key], averaged[key])
    assert torch.equal(FrozenTeacherHook(TEACHER, str(path)).build_teacher().state_dict()[key],
                       averaged[key])
    raw_teacher = FrozenTeacherHook(TEACHER, str(path), use_ema=False).build_teacher()
    assert torch.equal(raw_teacher.state_dict()[key], raw[key])


def test_official_teacher_checkpoint_gives_official_token_logits(official_fixtures, tmp_path):
    fixture = torch.load(official_fixtures / 'mini_hybrid_token.pt', weights_only=True)
    path = tmp_path / 'official_teacher.pth'
    torch.save(fixture['checkpoint'], path)
    kwargs = fixture['official_kwargs']
    teacher_cfg = dict(
        type='TokenLabelingClassifier',
        mode='labeler',
        backbone=dict(type='FAN', arch=FAN.arch_from_official(kwargs, fixture['hybrid_stem'])),
        head=dict(type='TokenLabelingHead', num_classes=kwargs['num_classes'],
                  in_channels=kwargs['embed_dim']))
    teacher = FrozenTeacherHook(teacher_cfg, str(path)).build_teacher()
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        _, token_logits = teacher.class_and_token_logits(fixture['input'])
    torch.testing.assert_close(token_logits.flatten(2).transpose(1, 2),
                               fixture['outputs']['aux_logits'], atol=1e-4, rtol=0)
