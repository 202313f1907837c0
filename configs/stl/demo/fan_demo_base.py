# What the three Fashion-MNIST demo configs share (`make demo`, tools/demo.py): the ImageNet
# recipe of configs/stl and configs/fan (same classifier, head, losses, augmentation, optimiser,
# EMA) shrunk to 28x28 grey garments, a FAN small enough to train on two CPU cores in minutes
# and a budget of a few epochs on a subset of the training set.
_base_ = ['../../_base_/default_runtime.py']
custom_imports = dict(imports=['stl_mm'], allow_failed_imports=False)

# A FAN-ViT (convolutional patch embedding, no hybrid stem): patch 4 on the native 28x28
# images gives a 7x7 token grid; 4 FAN blocks of width 64 (MLP ratio 2) and one
# class-attention block: 212k parameters, 1/36 of FAN-T. Width 32 (59k) stayed underfit at
# this budget (docs/demo.md); 28x28 instead of 32x32 inputs makes a step 1.4x faster.
demo_fan_arch = dict(embed_dims=64, depth=4, num_heads=4, mlp_ratio=2., patch_size=4,
                     cls_attn_layers=1)
img_size = 28
num_classes = 10
model = dict(
    type='TokenLabelingClassifier',
    backbone=dict(type='FAN', arch=demo_fan_arch, drop_path_rate=0.),
    head=dict(
        type='TokenLabelingHead',
        num_classes=num_classes,
        with_token_head=True,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')),
    # Mixup 0.8 / CutMix 1.0 as on ImageNet, but on one batch in ten: a few hundred steps
    # are too short to learn through mixing every batch.
    train_cfg=dict(
        augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)],
        probs=[0.05, 0.05]),
)

# Fashion-MNIST (28x28 grey, 60k train / 10k test) read by mmpretrain's FashionMNIST from the
# extracted IDX files; tools/dataset_converters/prepare_fashion_mnist.py puts them in
# data/fashion_mnist.
dataset_type = 'FashionMNIST'
data_root = 'data/fashion_mnist'
# The first images of the training set (its order is already shuffled): all classes balanced.
num_train_images = 22400

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
# The ImageNet recipe's augmentations, each weakened for a 212k-parameter model trained for
# 525 steps (ImageNet: crops from 8 % of the area, 2 RandAugment ops at magnitude 9, erasing
# 0.25 of the images): at this budget the model underfits, and the weak settings gained 2.6
# points over magnitude 3 / erasing 0.1 (docs/demo.md). The student's DualView uses them too.
crop_ratio_range = (0.9, 1.0)
rand_augment = dict(
    type='RandAugment',
    policies='timm_increasing',
    num_policies=1,
    total_level=10,
    magnitude_level=1,
    magnitude_std=0.5,
    hparams=dict(pad_val=background, interpolation='bicubic'))
random_erasing = dict(
    type='RandomErasing',
    erase_prob=0.05,
    mode='rand',
    min_area_ratio=0.02,
    max_area_ratio=1 / 4,
    fill_color=data_preprocessor['mean'],
    fill_std=data_preprocessor['std'])

# The crop and flip: the spatial steps a stage-2 teacher's view shares with the student's.
crop_and_flip = [
    dict(type='RandomResizedCrop', scale=img_size, crop_ratio_range=crop_ratio_range,
         backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
]
train_pipeline = [
    dict(type='GrayToBGR'),
    *crop_and_flip,
    rand_augment,
    random_erasing,
    dict(type='PackInputs'),
]

# The first step reads an image file (mmpretrain's vis_cam.py and other tools that start from
# a file) and keeps the array the in-memory FashionMNIST dataset gives.
test_pipeline = [
    dict(type='LoadImageFromFileOrArray'),
    dict(type='GrayToBGR'),
    dict(type='Resize', scale=(img_size, img_size), backend='pillow', interpolation='bicubic'),
    dict(type='PackInputs'),
]

# The loader stacks each batch into one tensor (mmengine's default_collate): a list of 128
# small tensors costs more to pass between processes than the model's step on a CPU core.
train_dataloader = dict(
    batch_size=128,
    num_workers=1,
    persistent_workers=True,
    collate_fn=dict(type='default_collate'),
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
    collate_fn=dict(type='default_collate'),
    dataset=dict(type=dataset_type, data_prefix=data_root, test_mode=True,
                 pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

# AdamW with FAN's decay exemptions; lr 4e-3 for 128 images per step (the ImageNet rate per
# 2048: a small model on a short schedule takes the higher rate), one warm-up epoch, cosine
# decay to 1e-5.
max_epochs = 3
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=4e-3, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
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
