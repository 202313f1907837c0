# The FAN-Hybrid ImageNet-1K classifier of configs/fan (mode='plain') and configs/stl
# (mode='labeler' / 'student'): class-token head with label smoothing 0.1, token head,
# Mixup / CutMix. Each config sets its mode (the students through fan_hybrid_in1k_student.py)
# and size (arch, drop_path_rate); the values here are FAN-T-Hybrid's. The head's in_channels
# is the backbone's width, set by the classifier.
model = dict(
    type='TokenLabelingClassifier',
    backbone=dict(type='FAN', arch='tiny-hybrid', drop_path_rate=0.05),
    head=dict(
        type='TokenLabelingHead',
        num_classes=1000,
        with_token_head=True,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')),
    # Mixup 0.8 / CutMix 1.0, one of them per batch (timm's switch probability 0.5).
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)
