# What the three Fashion-MNIST demo configs share (`make demo`, tools/demo.py): the ImageNet
# recipe of configs/stl and configs/fan (same classifier, head, losses, augmentation, optimiser,
# EMA) shrunk to 32x32 grey garments, a FAN small enough to train on two CPU cores in minutes
# and a budget of a few epochs on a subset of the training set.
_base_ = ['../../_base_/default_runtime.py']
custom_imports = dict(imports=['stl_mm'], allow_failed_imports=False)

# A FAN-ViT (convolutional patch embedding, no hybrid stem): patch 4 on 32x32 inputs gives an
# 8x8 token grid; 4 FAN blocks of width 32 (MLP ratio 2) and one class-attention block:
# 59k parameters, 1/100 of FAN-T, so that three trainings fit in minutes on two CPU cores.
demo_fan_arch = dict(embed_dims=32, depth=4, num_heads=4, mlp_ratio=2., patch_size=4,
                     cls_attn_layers=1)
num_classes = 10
model = dict(
    type='TokenLabelingClassifier',
    backbone=dict(type='FAN', arch=demo_fan_arch, drop_path_rate=0.),
    head=dict(
        type='TokenLabelingHead',
        num_classes=num_classes,
        with_token_head=True,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')),
    # Mixup 0.8 / CutMix 1.0 as on ImageNet, but only on half of the batches: a few epochs
    # are too short to learn through mixing every batch.
    train_cfg=dict(
        augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)],
        probs=[0.25, 0.25]),
)

# Fashion-MNIST (28x28 grey, 60k train / 10k test) read by mmpretrain's FashionMNIST from the
# extracted IDX files; tools/dataset_converters/prepare_fashion_mnist.py puts them in
# data/fashion_mnist.
dataset_type = 'FashionMNIST'
data_root = 'data/fashion_mnist'
# The first images of the training set (its order is already shuffled): all classes balanced.
num_train_images = 8000

data_preprocessor = dict(
    type='TokenLabelingDataPreprocessor',
    num_classes=num_classes,
    # Fashion-MNIST's pixel mean and std (0.286, 0.353 of 255), the same on the three channels.
    mean=[72.94, 72.94, 72.94],
    std=[90.02, 90.02, 90.02],
    to_rgb=True,
)
# The background is black: geometric RandAugment ops and erasing fill with it.
background = [0, 0, 0]

train_pipeline = [
    dict(type='GrayToBGR'),
    dict(type='RandomResizedCrop', scale=32, crop_ratio_range=(0.5, 1.0), backend='pillow',
         interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=2,
        total_level=10,
        magnitude_level=6,
        magnitude_std=0.5,
        hparams=dict(pad_val=background, interpolation='bicubic')),
    dict(
        type='RandomErasing',
        erase_prob=0.25,
        mode='rand',
        min_area_ratio=0.02,
        max_area_ratio=1 / 4,
        fill_color=data_preprocessor['mean'],
        fill_std=data_preprocessor['std']),
    dict(type='PackInputs'),
]

# The first step reads an image file (mmpretrain's vis_cam.py and other tools that start from
# a file) and keeps the array the in-memory FashionMNIST dataset gives.
test_pipeline = [
    dict(type='LoadImageFromFileOrArray'),
    dict(type='GrayToBGR'),
    dict(type='Resize', scale=(32, 32), backend='pillow', interpolation='bicubic'),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=128,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(
        type=dataset_type,
        data_prefix=data_root,
        test_mode=False,
        indices=num_train_images,
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=256,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(type=dataset_type, data_prefix=data_root, test_mode=True,
                 pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

# AdamW with FAN's decay exemptions; lr 2e-3 for 128 images per step (as the official
# FAN-T runs per 1024: a small model on a short schedule takes the higher rate), one warm-up
# epoch, cosine decay to 1e-5.
max_epochs = 5
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0,
        custom_keys={
            '.cls_token': dict(decay_mult=0.0),
            '.pos_embed': dict(decay_mult=0.0),
        }),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=1,
         convert_to_iter_based=True),
]
# Validation on the whole test set once, at the end.
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict()
test_cfg = dict()

# EMA of weights and buffers as on ImageNet, with a momentum for a few hundred steps.
custom_hooks = [
    dict(type='EMAHook', momentum=1e-2, update_buffers=True, priority='ABOVE_NORMAL'),
]

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(type='CheckpointHook', interval=max_epochs, max_keep_ckpts=1,
                    save_last=True),
)
env_cfg = dict(mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0, deterministic=False)
