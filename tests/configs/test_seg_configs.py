"""configs/seg: FAN-Hybrid + SegFormer head on Cityscapes (mmseg 1.2)."""
import runpy
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

import synthetic_cityscapes as synthetic

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / 'configs' / 'seg'
SIZES = {'t': 192, 's': 384, 'b': 448, 'l': 480}  # token width of each FAN-Hybrid preset


def config_path(size: str) -> Path:
    return CONFIG_DIR / f'segformer_fan-{size}-hybrid_8xb1-160k_cityscapes-1024x1024.py'


def build_segmentor(cfg: Config, init_cfg=None) -> torch.nn.Module:
    import stl_mm  # noqa: F401
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    model_cfg = cfg.model.copy()
    model_cfg.backbone = dict(model_cfg.backbone, init_cfg=init_cfg)
    return revert_sync_batchnorm(MODELS.build(model_cfg))


@pytest.mark.parametrize('size', list(SIZES))
def test_head_inputs_fit_the_dense_backbone(size):
    cfg = Config.fromfile(str(config_path(size)))
    assert cfg.default_scope == 'mmseg'
    assert cfg.custom_imports == dict(imports=['stl_mm'], allow_failed_imports=False)
    # The official recipe reads the raw weights (mmcv's load_checkpoint takes 'state_dict').
    assert cfg.model.backbone.init_cfg == dict(
        type='Pretrained', checkpoint=cfg.pretrained, prefix='backbone.', use_ema=False)

    model = build_segmentor(cfg).eval()
    assert model.backbone.dense_strides == (4, 8, 16, 16)
    assert tuple(cfg.model.decode_head.in_channels) == model.backbone.dense_channels
    assert model.backbone.dense_channels == (128, 256, SIZES[size], SIZES[size])
    with torch.no_grad():
        features = model.extract_feat(torch.randn(1, 3, 64, 64))
        logits = model.decode_head(features)
    assert [tuple(f.shape[1:]) for f in features] == [(128, 16, 16), (256, 8, 8),
                                                      (SIZES[size], 4, 4), (SIZES[size], 4, 4)]
    assert logits.shape == (1, 19, 16, 16)


def test_recipe_of_the_paper():
    cfg = Config.fromfile(str(config_path('t')))
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == ('AdamW', 6e-5, 0.01)
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys['head'] == dict(lr_mult=10.)
    warmup, poly = cfg.param_scheduler
    assert (warmup.type, warmup.begin, warmup.end) == ('LinearLR', 0, 1500)
    assert (poly.type, poly.power, poly.begin, poly.end) == ('PolyLR', 1.0, 1500, 160000)
    assert cfg.train_cfg.max_iters == 160000
    assert cfg.train_dataloader.batch_size == 1  # x 8 GPUs
    steps = {step.type: step for step in cfg.train_dataloader.dataset.pipeline}
    assert steps['RandomResize'].scale == (2048, 1024)
    assert steps['RandomResize'].ratio_range == (0.5, 2.0)
    assert steps['RandomCrop'].crop_size == (1024, 1024)
    assert steps['RandomCrop'].cat_max_ratio == 0.75
    assert 'RandomFlip' in steps and 'PhotoMetricDistortion' in steps
    assert cfg.model.test_cfg == dict(mode='slide', crop_size=(1024, 1024), stride=(768, 768))
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        assert loader.dataset.type == 'CityscapesDataset'
        assert loader.dataset.data_root.rstrip('/') == 'data/cityscapes'
    assert cfg.test_dataloader.dataset.data_prefix == dict(img_path='leftImg8bit/val',
                                                           seg_map_path='gtFine/val')


def test_head_learns_ten_times_faster_and_norms_skip_weight_decay():
    cfg = Config.fromfile(str(config_path('t')))
    model = build_segmentor(cfg)
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    groups = {id(param): group for group in optim_wrapper.optimizer.param_groups
              for param in group['params']}
    for name, param in model.named_parameters():
        group = groups[id(param)]
        if name.startswith('decode_head.'):
            assert group['lr'] == pytest.approx(6e-4), name
        else:
            assert name.startswith('backbone.') and group['lr'] == pytest.approx(6e-5), name
        if '.norm' in name:
            assert group['weight_decay'] == 0, name


def test_every_parameter_gets_a_gradient(tmp_path):
    """So multi-GPU training needs no ``find_unused_parameters``."""
    synthetic.make_cityscapes(tmp_path / 'cityscapes')
    cfg = synthetic.tiny_segmentation_config(config_path('t'), tmp_path / 'cityscapes',
                                             tmp_path / 'work')
    model = build_segmentor(cfg).train()
    from mmseg.registry import DATASETS
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    batch = model.data_preprocessor(pseudo_collate([dataset[0], dataset[1]]), training=True)
    loss, _ = model.parse_losses(model(**batch, mode='loss'))
    loss.backward()
    assert torch.isfinite(loss)
    missing = [name for name, param in model.named_parameters() if param.grad is None]
    assert not missing


def test_encoder_starts_from_an_imagenet_classifier_checkpoint(tmp_path):
    from stl_mm.models.backbones.fan import FAN
    classifier_backbone = FAN(arch='tiny-hybrid')
    state_dict = {f'backbone.{k}': torch.randn_like(v) if v.is_floating_point() else v
                  for k, v in classifier_backbone.state_dict().items()}
    state_dict['head.head.weight'] = torch.randn(1000, 192)
    checkpoint = tmp_path / 'fan_tiny_in1k.pth'
    torch.save({'state_dict': state_dict, 'meta': {}}, checkpoint)

    cfg = Config.fromfile(str(config_path('t')))
    init_cfg = dict(cfg.model.backbone.init_cfg, checkpoint=str(checkpoint))
    model = build_segmentor(cfg, init_cfg=init_cfg)
    model.init_weights()
    backbone_state = model.backbone.state_dict()
    for key, value in backbone_state.items():
        assert torch.equal(value, state_dict[f'backbone.{key}']), key


def test_encoder_starts_from_an_official_imagenet_checkpoint(official_fixtures, tmp_path):
    from stl_mm.models.backbones.fan_checkpoint import official_to_stl_mm
    fixture = torch.load(official_fixtures / 'fan_tiny_8_p4_hybrid_token.pt', weights_only=True)
    official = {key: value.float() if value.is_floating_point() else value
                for key, value in fixture['checkpoint']['state_dict'].items()}
    checkpoint = tmp_path / 'fan_tiny_8_p4_hybrid_token.pth.tar'
    torch.save({'state_dict': official, 'epoch': 300}, checkpoint)

    cfg = Config.fromfile(str(config_path('t')))
    init_cfg = dict(cfg.model.backbone.init_cfg, checkpoint=str(checkpoint))
    model = build_segmentor(cfg, init_cfg=init_cfg)
    model.init_weights()
    expected = official_to_stl_mm(dict(official))
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, expected[f'backbone.{key}']), key


def test_encoder_starts_from_the_raw_weights_of_a_file_with_ema_ones(tmp_path):
    """As the official recipe (mmcv's load_checkpoint reads 'state_dict'), not 'state_dict_ema'."""
    from stl_mm.models.backbones.fan import FAN
    template = FAN(arch='tiny-hybrid').state_dict()
    raw, ema = ({key: torch.full_like(value, fill) if value.is_floating_point() else value
                 for key, value in template.items()} for fill in (0.25, 0.75))
    checkpoint = tmp_path / 'fan_tiny_8_p4_hybrid.pth.tar'
    torch.save({'state_dict': raw, 'state_dict_ema': ema, 'epoch': 300}, checkpoint)
    cfg = Config.fromfile(str(config_path('t')))
    model = build_segmentor(cfg, dict(cfg.model.backbone.init_cfg, checkpoint=str(checkpoint)))
    model.init_weights()
    assert "weights from 'state_dict', EMA 'state_dict_ema' present but use_ema=False" in (
        model.backbone.load_report.source)
    torch.testing.assert_close(model.backbone.cls_token, raw['cls_token'])


def test_two_training_iterations_then_test_on_synthetic_cityscapes(tmp_path, monkeypatch):
    synthetic.make_cityscapes(tmp_path / 'cityscapes')
    work_dir = tmp_path / 'work'
    cfg = synthetic.tiny_segmentation_config(config_path('t'), tmp_path / 'cityscapes', work_dir)
    config = tmp_path / 'tiny_segformer_fan.py'
    cfg.dump(str(config))

    # tools/train.py exactly as from the command line, in this process (imports are paid once).
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, 'argv', ['train.py', str(config), '--work-dir', str(work_dir)])
    runpy.run_path(str(REPO_ROOT / 'tools' / 'train.py'), run_name='__main__')
    checkpoint = work_dir / 'iter_2.pth'
    assert checkpoint.is_file()
    logs = '\n'.join(path.read_text() for path in work_dir.rglob('*.log'))
    assert 'Iter(train) [2/2]' in logs

    from stl_mm.engine.runner_setup import build_runner
    cfg.load_from = str(checkpoint)
    cfg.work_dir = str(tmp_path / 'test')
    metrics = build_runner(cfg).test()
    assert set(metrics) >= {'aAcc', 'mIoU', 'mAcc'}
    assert 0 <= metrics['mIoU'] <= 100
