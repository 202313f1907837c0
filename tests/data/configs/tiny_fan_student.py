# A tiny STL stage-2 run: a FAN student with dual views, Mixup/CutMix and the frozen teacher
# trained by tiny_fan_cls.py (labeler mode). Tests set the data roots and the teacher checkpoint.
_base_ = './tiny_fan_cls_dist.py'

tiny_arch = dict(embed_dims=32, depth=2, num_heads=2, patch_size=8, cls_attn_layers=1)
model = dict(
    mode='student',
    token_loss=dict(type='GumbelTokenLabelLoss', token_label_mix='aligned'),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='DualView',
        shared=[dict(type='RandomResizedCrop', scale=32),
                dict(type='RandomFlip', prob=0.5, direction='horizontal')],
        rand_augment=dict(type='RandAugment', policies='timm_increasing', num_policies=2,
                          total_level=10, magnitude_level=9, magnitude_std=0.5),
        student_only=[dict(type='RandomErasing', erase_prob=0.3, mode='rand')]),
    dict(type='PackDualViewInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

default_hooks = dict(
    teacher=dict(
        type='FrozenTeacherHook',
        model=dict(
            type='TokenLabelingClassifier',
            mode='labeler',
            backbone=dict(type='FAN', arch=tiny_arch),
            head=dict(type='TokenLabelingHead', num_classes=2, in_channels=32)),
        checkpoint='set-by-the-test.pth'))
