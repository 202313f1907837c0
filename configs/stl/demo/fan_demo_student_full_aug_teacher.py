# Ablation of the demo student (STL Table 1's question): the teacher sees the student's
# full-augmentation view (crop, flip, every RandAugment op, erasing) instead of the
# spatial-only view. Batch Mixup / CutMix still act on the student batch only, as in
# fan_demo_student.py. Used by `python tools/demo.py --study`.
_base_ = ['./fan_demo_student.py']

train_pipeline = [
    dict(type='GrayToBGR'),
    dict(
        type='DualView',
        # Everything is shared: both views are the same fully augmented image.
        shared=_base_.crop_and_flip + [_base_.rand_augment, _base_.random_erasing]),
    dict(type='PackDualViewInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
