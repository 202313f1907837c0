"""configs/det: the Cascade Mask R-CNN + FAN-Hybrid recipe (FAN and STL backbones), model
builds, initial weights, CPU train and test."""
import json
import math
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from det_synthetic_coco import fit_to_synthetic_coco, make_synthetic_coco

REPO_ROOT = Path(__file__).resolve().parents[2]

DET_CONFIGS = REPO_ROOT / 'configs' / 'det'
# Config size letter -> (FAN preset, official classification model whose final norm width is
# the FAN token width, i.e. the third FPN input).
SIZES = {
    't': ('tiny-hybrid', 'fan_tiny_8_p4_hybrid'),
    's': ('small-hybrid', 'fan_small_12_p4_hybrid'),
    'b': ('base-hybrid', 'fan_base_16_p4_hybrid'),
    'l': ('large-hybrid', 'fan_large_16_p4_hybrid'),
}


# FAN: the FAN repository's detection backbone; STL: the same plus a LayerNorm on each output.
FAMILIES = ('fan', 'stl-fan')
STL_STUDENTS = {'t': 'fan_tiny_8_p4_hybrid_token', 's': 'fan_small_12_p4_hybrid_token',
                'b': 'fan_base_16_p4_hybrid_token', 'l': 'fan_large_16_p4_hybrid_token'}


def config_path(size: str, family: str = 'fan') -> Path:
    return DET_CONFIGS / f'cascade-mask-rcnn_{family}-{size}-hybrid_fpn_ms-3x_coco.py'


def official_token_width(official_fixtures: Path, official_name: str) -> int:
    manifest = json.loads((official_fixtures / 'manifest.json').read_text())
    return dict(manifest[official_name]['state_dict'])['norm.weight'][0]


class WeightSnapshot(Hook):
    """Copies the weights when training starts (after the runner initialised them)."""

    def before_train(self, runner) -> None:
        self.weights = {name: p.detach().clone() for name, p in runner.model.named_parameters()}


def collect(node: object, key: str) -> list:
    """Every value of ``key`` anywhere in a nested config."""
    if isinstance(node, dict):
        found = [node[key]] if key in node else []
        return found + [v for value in node.values() for v in collect(value, key)]
    if isinstance(node, (list, tuple)):
        return [v for item in node for v in collect(item, key)]
    return []


@pytest.mark.parametrize('family', FAMILIES)
@pytest.mark.parametrize('size', SIZES)
def test_config_follows_the_official_recipe(size, family, official_fixtures):
    arch, official_name = SIZES[size]
    cfg = Config.fromfile(config_path(size, family))
    assert cfg.default_scope == 'mmdet'
    assert cfg.custom_imports == dict(imports=['stl_mm'], allow_failed_imports=False)

    backbone = cfg.model.backbone
    assert (backbone.type, backbone.arch, backbone.dense) == ('FAN', arch, True)
    assert tuple(backbone.out_indices) == (0, 1, 2, 3)
    assert backbone.drop_path_rate == 0.3
    assert backbone.get('out_norms', False) is (family == 'stl-fan')
    # The raw weights, as the official recipe (mmcv's load_checkpoint reads 'state_dict').
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=cfg.checkpoint,
                                     prefix='backbone.', use_ema=False)
    if family == 'stl-fan':
        assert Path(cfg.checkpoint).name == f'{STL_STUDENTS[size]}.pth.tar'
    width = official_token_width(official_fixtures, official_name)
    assert cfg.model.neck == dict(type='FPN', in_channels=[128, 256, width, 768],
                                  out_channels=256, num_outs=5)

    roi_head = cfg.model.roi_head
    assert roi_head.type == 'CascadeRoIHead' and roi_head.num_stages == 3
    assert len(roi_head.bbox_head) == 3
    for head, stds in zip(roi_head.bbox_head, ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
                                               [0.033, 0.033, 0.067, 0.067])):
        assert head.type == 'Shared4Conv1FCBBoxHead'
        assert (head.conv_out_channels, head.fc_out_channels) == (256, 1024)
        assert head.norm_cfg.type == 'SyncBN'
        assert head.reg_class_agnostic is False and head.reg_decoded_bbox is True
        assert head.loss_bbox == dict(type='GIoULoss', loss_weight=10.0)
        assert head.bbox_coder.target_stds == stds
    assert [stage.assigner.pos_iou_thr for stage in cfg.model.train_cfg.rcnn] == [0.5, 0.6, 0.7]

    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == ('AdamW', 1e-4, 0.05)
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys['norm'].decay_mult == 0.
    assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 16
    assert cfg.train_cfg.max_epochs == 36
    warmup, steps = cfg.param_scheduler
    assert (warmup.type, warmup.by_epoch, warmup.end, warmup.start_factor) == (
        'LinearLR', False, 500, 0.001)
    assert (steps.type, steps.milestones, steps.gamma) == ('MultiStepLR', [27, 33], 0.1)

    train = cfg.train_dataloader.dataset
    assert (train.type, train.data_root) == ('CocoDataset', 'data/coco/')
    assert train.ann_file == 'annotations/instances_train2017.json'
    assert cfg.test_evaluator.metric == ['bbox', 'segm']
    multi_scale, crop_then_scale = collect(train.pipeline, 'transforms')[0]
    short_sides = list(range(480, 801, 32))
    assert multi_scale[0].scales == [(s, 1333) for s in short_sides]
    assert [t.type for t in crop_then_scale] == ['RandomChoiceResize', 'RandomCrop',
                                                 'RandomChoiceResize']
    assert crop_then_scale[1].crop_size == (384, 600)
    assert crop_then_scale[2].scales == [(s, 1333) for s in short_sides]


def build_detector(cfg: Config) -> torch.nn.Module:
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    return MODELS.build(cfg.model)


@pytest.mark.parametrize('family', FAMILIES)
@pytest.mark.parametrize('size', SIZES)
def test_model_builds_and_fpn_widths_match_the_backbone(size, family):
    cfg = Config.fromfile(config_path(size, family))
    detector = build_detector(cfg)
    assert type(detector).__name__ == 'CascadeRCNN'
    backbone = detector.backbone
    assert list(backbone.dense_channels) == cfg.model.neck.in_channels
    out_norms = {key: tuple(value.shape) for key, value in backbone.state_dict().items()
                 if key.startswith('out_norm')}
    if family == 'stl-fan':  # STL's keys: out_norm{i}.weight/bias of each FPN input's width
        assert out_norms == {f'out_norm{i}.{p}': (width, ) for i, width in
                             enumerate(cfg.model.neck.in_channels) for p in ('weight', 'bias')}
    else:
        assert out_norms == {}
    with torch.no_grad():
        maps = backbone.eval()(torch.zeros(1, 3, 64, 96))
    assert [tuple(m.shape) for m in maps] == [
        (1, c, 64 // s, 96 // s) for c, s in zip(cfg.model.neck.in_channels, (4, 8, 16, 32))]


@pytest.mark.parametrize('family', FAMILIES)
def test_backbone_starts_from_the_raw_weights_of_a_file_with_ema_ones(family, tmp_path):
    """As the official recipe (mmcv's load_checkpoint reads 'state_dict'), not 'state_dict_ema';
    STL's output norms are not in an ImageNet file and start at weight 1, bias 0."""
    from stl_mm.models.backbones import FAN
    template = FAN(arch='tiny-hybrid').state_dict()
    raw, ema = ({key: torch.full_like(value, fill) if value.is_floating_point() else value
                 for key, value in template.items()} for fill in (0.25, 0.75))
    checkpoint = tmp_path / 'fan_tiny_8_p4_hybrid.pth.tar'
    torch.save({'state_dict': raw, 'state_dict_ema': ema, 'epoch': 300}, checkpoint)
    cfg = Config.fromfile(config_path('t', family))
    backbone_cfg = dict(cfg.model.backbone, init_cfg=dict(cfg.model.backbone.init_cfg,
                                                          checkpoint=str(checkpoint)))
    backbone_cfg.pop('type')
    backbone = FAN(**backbone_cfg)
    backbone.init_weights()
    assert "weights from 'state_dict', EMA 'state_dict_ema' present but use_ema=False" in (
        backbone.load_report.source)
    torch.testing.assert_close(backbone.cls_token, raw['cls_token'])
    new = [key for key in backbone.load_report.new if key.startswith('out_norm')]
    assert len(new) == (8 if family == 'stl-fan' else 0)


def test_stl_detection_checkpoints_fit_the_stl_config_and_not_the_fan_one(tmp_path):
    """A trained STL detector (mmdet layout, out_norm keys) loads into the STL config's model
    strictly; the FAN config's model refuses it, saying to set out_norms=True."""
    from stl_mm.models.backbones.fan_checkpoint import CheckpointMismatchError, load_checkpoint
    stl = build_detector(Config.fromfile(config_path('t', 'stl-fan')))
    path = tmp_path / 'stl_cascade_mask_rcnn.pth'
    torch.save({'meta': {'epoch': 36}, 'state_dict': stl.state_dict()}, path)
    report = load_checkpoint(build_detector(Config.fromfile(config_path('t', 'stl-fan'))),
                             str(path))
    assert report.new == report.unused == []
    with pytest.raises(CheckpointMismatchError, match='build the backbone with out_norms=True'):
        load_checkpoint(build_detector(Config.fromfile(config_path('t'))), str(path))


def test_fan_t_trains_two_iterations_and_evaluates_on_cpu(tmp_path):
    """The real FAN-T config on a synthetic COCO set (scales /8, fewer RoIs): the runner turns
    SyncBN into BN without a process group, every parameter gets a gradient (so DDP needs no
    find_unused_parameters), two training iterations update the weights, and testing returns
    COCO box and mask mAP."""
    from mmengine.runner import Runner
    dataset = make_synthetic_coco(tmp_path / 'coco', num_images=2)
    cfg = fit_to_synthetic_coco(Config.fromfile(config_path('t')), dataset,
                                str(tmp_path / 'work'))
    runner = Runner.from_cfg(cfg)
    model = runner.model
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())

    model.train()
    # A loader of its own: mmdet's AspectRatioBatchSampler keeps unfinished batches between
    # iterators, so peeking into the runner's loader would add an iteration to the epoch.
    loader = Runner.build_dataloader(cfg.train_dataloader)
    batch = model.data_preprocessor(next(iter(loader)), True)
    losses = model(**batch, mode='loss')
    total, _ = model.parse_losses(losses)
    total.backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
    assert {'loss_rpn_cls', 's0.loss_bbox', 's2.loss_mask'} <= set(losses)
    model.zero_grad()

    snapshot = WeightSnapshot()
    runner.register_hook(snapshot)
    runner.train()
    assert runner.iter == 2
    log = runner.message_hub.log_scalars
    for key in ('train/loss_rpn_cls', 'train/s0.loss_bbox', 'train/s1.loss_cls',
                'train/s2.loss_mask'):
        assert math.isfinite(log[key].current()), key
    changed = {name.split('.')[0] for name, p in model.named_parameters()
               if not torch.equal(p, snapshot.weights[name])}
    assert {'backbone', 'neck', 'rpn_head', 'roi_head'} <= changed

    metrics = runner.test()
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP', 'coco/segm_mAP_50'):
        assert 0. <= metrics[key] <= 1., (key, metrics[key])
