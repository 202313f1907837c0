# A tiny FAN classifier on a folder of images, for tests of the tools and the runner.
# Tests set train_dataloader.dataset.data_root and friends to a temporary image folder.
default_scope = 'mmpretrain'
custom_imports = dict(imports=['stl_mm'], allow_failed_imports=False)

model = dict(
    type='TokenLabelingClassifier',
    mode='labeler',
    backbone=dict(
        type='FAN',
        arch=dict(embed_dims=32, depth=2, num_heads=2, patch_size=8, cls_attn_layers=1)),
    head=dict(type='TokenLabelingHead', num_classes=2, in_channels=32),
    data_preprocessor=dict(
        type='TokenLabelingDataPreprocessor', num_classes=2, mean=[127.5] * 3, std=[127.5] * 3,
        to_rgb=True))

pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(32, 32)),
    dict(type='PackInputs'),
]
dataset = dict(type='CustomDataset', data_root='data/tiny', pipeline=pipeline)
train_dataloader = dict(
    batch_size=2, num_workers=0, dataset=dataset,
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=2, num_workers=0, dataset=dataset,
    sampler=dict(type='DefaultSampler', shuffle=False))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

train_cfg = dict(by_epoch=True, max_epochs=2, val_interval=1)
val_cfg = dict()
test_cfg = dict()
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05))
param_scheduler = dict(type='CosineAnnealingLR', by_epoch=True, T_max=2, eta_min=1e-5)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=1),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
custom_hooks = [dict(type='EMAHook', momentum=0.01)]
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='nccl'))
randomness = dict(seed=0)
log_level = 'INFO'
load_from = None
resume = False
