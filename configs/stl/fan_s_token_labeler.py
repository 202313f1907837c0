# STL stage 1: the FAN-S-Hybrid token labeler on ImageNet-1K (paper Eq. 2): class loss
# + alpha * CE(mean over tokens of the token logits, class target), alpha = 1, both with the
# smoothed (and mixed) class target. Train it first; its last checkpoint,
# work_dirs/fan_s_token_labeler/epoch_350.pth, is the teacher of configs/stl/fan_s_student.py.
# Official recipe: NVlabs/STL scripts/fan_token_labeler/fan_small_tl.sh
# (8 GPUs x 128, lr 2e-3).
_base_ = [
    '../_base_/models/fan_hybrid_in1k.py',
    '../_base_/datasets/imagenet_bs128_fan_224.py',
    '../_base_/schedules/imagenet_bs2048_adamw_fan_350e.py',
    '../_base_/default_runtime.py',
]
custom_imports = dict(imports=['stl_mm'], allow_failed_imports=False)

model = dict(
    mode='labeler',
    labeler_weight=1.0,
    backbone=dict(arch='small-hybrid', drop_path_rate=0.25))

# 16 GPUs x 128 = 2048 images per step at lr 4e-3; other totals scale the lr linearly.
train_dataloader = dict(batch_size=128)
