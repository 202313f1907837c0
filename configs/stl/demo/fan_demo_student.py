# STL stage 2 on Fashion-MNIST (demo): the student, trained with the class loss
# + beta * mean over tokens of CE(token logits, token labels of the frozen stage-1 teacher),
# beta = 1, as configs/stl/fan_*_student.py on ImageNet: the teacher sees a view sharing the
# crop, flip and geometric RandAugment ops of the student's view but none of its photometric
# ops or erasing (DualView), and its token logits become hard Gumbel-softmax labels.
_base_ = ['./fan_demo_base.py']

model = dict(
    mode='student',
    token_loss=dict(
        type='GumbelTokenLabelLoss',
        mode='gumbel',
        tau=1.0,
        label_smoothing=0.1,
        loss_weight=1.0,
        token_label_mix='none'),
)

train_pipeline = [
    dict(type='GrayToBGR'),
    dict(
        type='DualView',
        shared=_base_.crop_and_flip,
        rand_augment=_base_.rand_augment,
        geometric_ops=('Rotate', 'Shear', 'Translate'),
        student_only=[_base_.random_erasing]),
    # Packs the student view as `inputs` and the teacher view as `teacher_inputs`.
    dict(type='PackDualViewInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

# The frozen teacher: the stage-1 token labeler. tools/demo.py points it at the checkpoint
# stage 1 just wrote (--cfg-options default_hooks.teacher.checkpoint=PATH).
default_hooks = dict(
    teacher=dict(
        type='FrozenTeacherHook',
        model=dict(
            type='TokenLabelingClassifier',
            mode='labeler',
            backbone=dict(type='FAN', arch=_base_.demo_fan_arch),
            head=dict(
                type='TokenLabelingHead',
                num_classes=_base_.num_classes,
                with_token_head=True)),
        checkpoint='work_dirs/fan_demo_token_labeler/epoch_3.pth',
        use_ema=True))
