# The STL stage-2 student of configs/stl/fan_*_student.py (paper Eq. 5): the FAN-Hybrid
# classifier of fan_hybrid_in1k.py trained with the class loss + beta * mean over tokens of
# CE(token logits, token labels of the frozen stage-1 teacher), beta = 1, and the runtime with
# that teacher. Each student config sets its size (the student's arch and drop_path_rate; the
# teacher's arch and checkpoint); the values here are FAN-T-Hybrid's.
_base_ = ['./fan_hybrid_in1k.py', '../default_runtime.py']

model = dict(
    mode='student',
    # Token labels: hard Gumbel-softmax samples of the teacher's token logits (tau = 1),
    # smoothed with 0.1, weight beta = 1. token_label_mix='none' takes them from the unmixed
    # teacher view as the paper does; 'aligned' is our extension that mixes them like the
    # student's Mixup / CutMix.
    token_loss=dict(
        type='GumbelTokenLabelLoss',
        mode='gumbel',
        tau=1.0,
        label_smoothing=0.1,
        loss_weight=1.0,
        token_label_mix='none'))

# The frozen teacher: a stage-1 token labeler. Its default checkpoint is the last one
# `python tools/train.py configs/stl/fan_<size>_token_labeler.py` leaves; point it elsewhere
# (e.g. a converted official STL teacher) with one override:
#   --cfg-options default_hooks.teacher.checkpoint=PATH
# (the hook lives in default_hooks, a dict, so the override reaches it by name).
default_hooks = dict(
    teacher=dict(
        type='FrozenTeacherHook',
        model=dict(
            type='TokenLabelingClassifier',
            mode='labeler',
            backbone=dict(type='FAN', arch='tiny-hybrid'),
            head=dict(
                type='TokenLabelingHead',
                num_classes=1000,
                with_token_head=True)),
        checkpoint='work_dirs/fan_t_token_labeler/epoch_350.pth',
        use_ema=True))
