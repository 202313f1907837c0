# SegFormer head on a FAN-Hybrid encoder, Cityscapes 1024x1024, 160k iterations, total batch 8.
# The recipe of FAN/STL's Cityscapes experiments (SegFormer's): AdamW 6e-5, weight decay 0.01,
# head learning rate x10, 1500 warm-up iterations, then poly decay with power 1.0.
# Each leaf config picks the FAN preset, its ImageNet checkpoint and the head's input widths.
# Mixed precision: tools/train.py CONFIG --amp (AmpOptimWrapper, dynamic loss scale).
_base_ = [
    'mmseg::_base_/datasets/cityscapes.py',  # CityscapesDataset under data/cityscapes, mIoU
    'mmseg::_base_/default_runtime.py',
]
custom_imports = dict(imports=['stl_mm'], allow_failed_imports=False)

crop_size = (1024, 1024)
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=crop_size)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='FAN',
        dense=True,
        out_indices=(0, 1, 2, 3),  # strides 4 and 8 (ConvNeXt stem), 16 (blocks), 16 (cls-attn)
        # As in the official FAN segmentation models: the last map stays at stride 16, without
        # the detection backbone's learnable stride-2 downsample (SegformerHead resizes anyway).
        feat_downsample=False,
        drop_path_rate=0.,
        norm_cfg=norm_cfg),  # the BN inside the channel MLPs: one image per GPU, so sync it
    decode_head=dict(
        type='SegformerHead',
        in_index=[0, 1, 2, 3],
        channels=768,  # the official FAN heads' embedding width (mmseg's MiT configs use 256)
        dropout_ratio=0.1,
        num_classes=19,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(768, 768)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(2048, 1024), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
# 8 GPUs x 1 image. Validation and test keep mmseg's Cityscapes pipeline (whole 2048x1024
# image, labels at full resolution), one image per GPU, and mmseg's IoUMetric (mIoU).
train_dataloader = dict(batch_size=1, num_workers=4, dataset=dict(pipeline=train_pipeline))
auto_scale_lr = dict(enable=False, base_batch_size=8)

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={
        'norm': dict(decay_mult=0.),
        'head': dict(lr_mult=10.),  # decode_head.*
    }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=160000),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=160000, val_interval=16000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='CheckpointHook', by_epoch=False, interval=16000, max_keep_ckpts=2,
        save_best='mIoU'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
