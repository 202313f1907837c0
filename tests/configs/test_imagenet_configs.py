"""The ImageNet configs of configs/fan and configs/stl: they load, carry the paper recipe,
stay shallow, build their models, and the stage-2 teacher checkpoint is overridable once."""
import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmpretrain.registry import MODELS, TRANSFORMS

import stl_mm  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
SIZES = {
    # size: (FAN preset, official token-labeler model, drop path, warm-up epochs, batch per GPU)
    't': ('tiny-hybrid', 'fan_tiny_8_p4_hybrid_token', 0.05, 5, 128),
    's': ('small-hybrid', 'fan_small_12_p4_hybrid_token', 0.25, 5, 128),
    'b': ('base-hybrid', 'fan_base_16_p4_hybrid_token', 0.35, 10, 64),
    'l': ('large-hybrid', 'fan_large_16_p4_hybrid_token', 0.45, 10, 64),
}
# config -> (student size, teacher size or None, classifier mode)
CONFIGS = {}
for _size in SIZES:
    CONFIGS[f'configs/fan/fan_{_size}_hybrid_in1k.py'] = (_size, None, 'plain')
    CONFIGS[f'configs/stl/fan_{_size}_token_labeler.py'] = (_size, None, 'labeler')
    CONFIGS[f'configs/stl/fan_{_size}_student.py'] = (_size, _size, 'student')
CONFIGS['configs/stl/fan_l_student_teacher_b.py'] = ('l', 'b', 'student')


def load(config: str) -> Config:
    return Config.fromfile(str(REPO / config))


def base_depth(path: Path) -> int:
    """Number of `_base_` levels above a config file."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], 'id', '') == '_base_':
            bases = ast.literal_eval(node.value)
            bases = [bases] if isinstance(bases, str) else bases
            return 1 + max(base_depth((path.parent / base).resolve()) for base in bases)
    return 0


@pytest.fixture(scope='module')
def embed_widths(official_fixtures) -> dict:
    """Embedding width (class-token size) of each official FAN / STL model."""
    manifest = json.loads((official_fixtures / 'manifest.json').read_text())
    widths = {}
    for name, entry in manifest.items():
        shapes = {key: shape for key, shape in entry['state_dict']}
        if 'cls_token' in shapes:
            widths[name] = shapes['cls_token'][-1]
    return widths


@pytest.mark.parametrize('config', sorted(CONFIGS))
def test_recipe(config, embed_widths):
    size, teacher_size, mode = CONFIGS[config]
    arch, official, drop_path, warmup, batch = SIZES[size]
    cfg = load(config)
    assert base_depth(REPO / config) <= 2
    assert cfg.custom_imports == dict(imports=['stl_mm'], allow_failed_imports=False)

    # Model: preset, width of the official model, drop path, label smoothing, Mixup/CutMix.
    model = cfg.model
    assert model.type == 'TokenLabelingClassifier' and model.mode == mode
    assert model.backbone == dict(type='FAN', arch=arch, drop_path_rate=drop_path)
    assert 'in_channels' not in model.head  # the classifier takes it from the backbone
    assert model.head.num_classes == 1000
    assert model.head.with_token_head == (mode != 'plain')
    assert model.head.loss == dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')
    assert model.train_cfg.augments == [dict(type='Mixup', alpha=0.8),
                                        dict(type='CutMix', alpha=1.0)]
    if mode == 'labeler':
        assert model.labeler_weight == 1.0
    if mode == 'student':
        assert model.token_loss == dict(type='GumbelTokenLabelLoss', mode='gumbel', tau=1.0,
                                        label_smoothing=0.1, loss_weight=1.0,
                                        token_label_mix='none')
    assert cfg.data_preprocessor.type == 'TokenLabelingDataPreprocessor'

    # Optimiser and schedule: AdamW 4e-3 at 2048 (scaled), 350 epochs, warm-up, cosine to 1e-6.
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == ('AdamW', 4e-3, 0.05)
    assert cfg.auto_scale_lr == dict(base_batch_size=2048, enable=True)
    paramwise = cfg.optim_wrapper.paramwise_cfg
    assert paramwise.norm_decay_mult == paramwise.bias_decay_mult == 0.0
    assert paramwise.flat_decay_mult == 0.0
    assert set(paramwise.custom_keys) == {'.cls_token', '.pos_embed'}
    assert cfg.train_cfg.max_epochs == 350
    linear, cosine = cfg.param_scheduler
    assert linear.type == 'LinearLR' and linear.end == warmup
    assert linear.start_factor * optimizer.lr == pytest.approx(1e-6)
    assert cosine.type == 'CosineAnnealingLR' and cosine.begin == warmup
    assert cosine.eta_min == 1e-6 and 'end' not in cosine
    assert cfg.train_dataloader.batch_size == batch
    ema, = [hook for hook in cfg.custom_hooks if hook.type == 'EMAHook']
    assert ema.momentum == pytest.approx(1 - 0.99992)
    assert ema.update_buffers is True

    # Data: ImageNet under data/imagenet, timm's RandAugment and erasing, 224 crops.
    dataset = cfg.train_dataloader.dataset
    assert (dataset.type, dataset.data_root, dataset.split) == ('ImageNet', 'data/imagenet',
                                                                'train')
    assert cfg.val_dataloader.dataset.split == 'val'
    steps = {step.type: step for step in dataset.pipeline}
    if mode == 'student':
        assert list(steps) == ['LoadImageFromFile', 'DualView', 'PackDualViewInputs']
        dual_view = steps['DualView']
        crop, flip = dual_view.shared
        rand_augment = dual_view.rand_augment
        erasing, = dual_view.student_only
        assert tuple(dual_view.geometric_ops) == ('Rotate', 'Shear', 'Translate')
    else:
        assert list(steps) == ['LoadImageFromFile', 'RandomResizedCrop', 'RandomFlip',
                               'RandAugment', 'RandomErasing', 'PackInputs']
        crop, flip = steps['RandomResizedCrop'], steps['RandomFlip']
        rand_augment, erasing = steps['RandAugment'], steps['RandomErasing']
    assert crop.type == 'RandomResizedCrop' and crop.scale == 224
    assert flip.prob == 0.5
    assert (rand_augment.policies, rand_augment.num_policies, rand_augment.magnitude_level,
            rand_augment.magnitude_std, rand_augment.total_level) == ('timm_increasing', 2, 9,
                                                                      0.5, 10)
    assert erasing.type == 'RandomErasing' and erasing.erase_prob == 0.3
    assert erasing.mode == 'rand' and erasing.max_area_ratio == pytest.approx(1 / 3)
    val_steps = [step.type for step in cfg.val_dataloader.dataset.pipeline]
    assert val_steps == ['LoadImageFromFile', 'ResizeEdge', 'CenterCrop', 'PackInputs']
    assert cfg.val_dataloader.dataset.pipeline[1].scale == 224

    # Teacher: the stage-1 config's last checkpoint, a same-head token labeler.
    if teacher_size is None:
        assert 'teacher' not in cfg.default_hooks
        return
    hook = cfg.default_hooks.teacher
    assert hook.type == 'FrozenTeacherHook' and hook.use_ema is True
    stage1 = f'configs/stl/fan_{teacher_size}_token_labeler.py'
    stage1_cfg = load(stage1)
    last_epoch = stage1_cfg.train_cfg.max_epochs
    assert stage1_cfg.default_hooks.checkpoint.save_last is True
    assert hook.checkpoint == f'work_dirs/{Path(stage1).stem}/epoch_{last_epoch}.pth'
    assert hook.model.mode == 'labeler'
    assert hook.model.backbone.arch == stage1_cfg.model.backbone.arch
    assert 'in_channels' not in hook.model.head


def test_every_imagenet_config_is_covered():
    found = {str(path.relative_to(REPO)) for folder in ('configs/fan', 'configs/stl')
             for path in (REPO / folder).glob('*.py')}
    assert set(CONFIGS) <= found
    assert base_depth(REPO / 'configs/_base_/datasets/imagenet_bs128_stl_dual_view_224.py') == 1


def test_dual_view_pipeline_of_the_config_runs():
    cfg = load('configs/stl/fan_t_student.py')
    pipeline = [TRANSFORMS.build(step) for step in cfg.train_dataloader.dataset.pipeline[1:]]
    image = np.random.RandomState(0).randint(0, 256, (300, 260, 3)).astype(np.uint8)
    results = dict(img=image, gt_label=3, img_shape=image.shape[:2], ori_shape=image.shape[:2])
    for step in pipeline:
        results = step(results)
    assert results['inputs'].shape == results['teacher_inputs'].shape == (3, 224, 224)


def test_teacher_checkpoint_override_reaches_the_hook(tmp_path):
    """One --cfg-options entry changes the checkpoint of the hook the runner builds."""
    from mmengine.config import DictAction
    from mmengine.runner import Runner
    cfg = load('configs/stl/fan_t_student.py')
    action = DictAction(option_strings=['--cfg-options'], dest='cfg_options')
    namespace = type('Namespace', (), {})()
    action(None, namespace, ['default_hooks.teacher.checkpoint=converted/stl_fan_t.pth'])
    cfg.merge_from_dict(namespace.cfg_options)
    cfg.work_dir = str(tmp_path)
    cfg.model.backbone.drop_path_rate = 0.0
    runner = Runner.from_cfg(cfg)
    teacher_hooks = [hook for hook in runner.hooks if type(hook).__name__ == 'FrozenTeacherHook']
    assert len(teacher_hooks) == 1
    assert teacher_hooks[0].checkpoint == 'converted/stl_fan_t.pth'


@pytest.mark.parametrize('config', sorted(CONFIGS))
def test_model_builds(config, embed_widths):
    size, teacher_size, mode = CONFIGS[config]
    cfg = load(config)
    model = MODELS.build(dict(cfg.model, data_preprocessor=cfg.data_preprocessor))
    assert model.stl_mode == mode
    assert type(model.data_preprocessor).__name__ == 'TokenLabelingDataPreprocessor'
    # The head width comes from the backbone: that of the official model of this size.
    assert model.head.in_channels == embed_widths[SIZES[size][1]]
    if 'teacher' in cfg.default_hooks:
        teacher = MODELS.build(cfg.default_hooks.teacher.model)
        assert teacher.head.num_classes == model.head.num_classes
        assert teacher.head.in_channels == embed_widths[SIZES[teacher_size][1]]


def test_head_width_set_by_hand_must_match_the_backbone():
    cfg = load('configs/stl/fan_b_token_labeler.py')
    cfg.model.head.in_channels = 480  # FAN-L's width on a FAN-B backbone
    with pytest.raises(ValueError, match='in_channels=480, but the backbone FAN gives '
                       '448-channel features'):
        MODELS.build(cfg.model)


def test_student_config_trains_one_step_on_synthetic_images():
    """The FAN-T student config end to end: its pipeline, its data preprocessor with
    Mixup / CutMix, its model and its teacher model (random weights), one loss call.
    Crops are 96x96 instead of 224x224 to keep the CPU time small."""
    cfg = load('configs/stl/fan_t_student.py')
    cfg.train_dataloader.dataset.pipeline[1].shared[0].scale = 96
    pipeline = [TRANSFORMS.build(step) for step in cfg.train_dataloader.dataset.pipeline[1:]]
    samples = []
    for index in range(2):
        image = np.random.RandomState(index).randint(0, 256, (240, 250, 3)).astype(np.uint8)
        results = dict(img=image, gt_label=index, img_shape=image.shape[:2])
        for step in pipeline:
            results = step(results)
        samples.append(results)
    batch = dict(inputs=[s['inputs'] for s in samples],
                 teacher_inputs=[s['teacher_inputs'] for s in samples],
                 data_samples=[s['data_samples'] for s in samples])
    model = MODELS.build(dict(cfg.model, data_preprocessor=cfg.data_preprocessor))
    teacher = MODELS.build(cfg.default_hooks.teacher.model).eval().requires_grad_(False)
    model.set_teacher(teacher)
    data = model.data_preprocessor(batch, training=True)
    assert data['batch_mix'] is not None and data['teacher_inputs'].shape == (2, 3, 96, 96)
    for token_label_mix in ('none', 'aligned'):
        model.token_loss.token_label_mix = token_label_mix
        losses = model(**data, mode='loss')
        assert set(losses) >= {'loss_cls', 'loss_token'}
        assert all(torch.isfinite(value) for value in losses.values())
