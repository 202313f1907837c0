# ImageNet-1K for STL stage 2: the augmentation of imagenet_bs128_fan_224.py, split into a
# student view and a teacher view of each image (DualView). Both views share the random
# resized crop, the flip and the geometric RandAugment ops (rotate, shear, translate, same
# magnitudes); only the student gets the photometric RandAugment ops and random erasing.
# Validation is single-view, as in the base file.
_base_ = './imagenet_bs128_fan_224.py'

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='DualView',
        shared=[
            dict(type='RandomResizedCrop', scale=224, backend='pillow',
                 interpolation='bicubic'),
            dict(type='RandomFlip', prob=0.5, direction='horizontal'),
        ],
        rand_augment=dict(
            type='RandAugment',
            policies='timm_increasing',
            num_policies=2,
            total_level=10,
            magnitude_level=9,
            magnitude_std=0.5,
            hparams=dict(pad_val=[round(x) for x in _base_.bgr_mean],
                         interpolation='bicubic')),
        geometric_ops=('Rotate', 'Shear', 'Translate'),
        student_only=[
            dict(
                type='RandomErasing',
                erase_prob=0.3,
                mode='rand',
                min_area_ratio=0.02,
                max_area_ratio=1 / 3,
                fill_color=_base_.bgr_mean,
                fill_std=_base_.bgr_std),
        ]),
    # Packs the student view as `inputs` and the teacher view as `teacher_inputs`.
    dict(type='PackDualViewInputs'),
]

train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
