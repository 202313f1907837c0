# STL stage 2: the FAN-T-Hybrid student on ImageNet-1K (paper Eq. 5): class loss
# + beta * mean over tokens of CE(token logits, token labels of the frozen stage-1 teacher),
# beta = 1. Student and teacher see two views of each image (see the dual-view dataset file).
# Official recipe: NVlabs/STL scripts/fan_stl_student/fan_tiny_stl.sh
# (8 GPUs x 128, lr 2e-3).
_base_ = [
    '../_base_/models/fan_hybrid_in1k_student.py',
    '../_base_/datasets/imagenet_bs128_stl_dual_view_224.py',
    '../_base_/schedules/imagenet_bs2048_adamw_fan_350e.py',
]
custom_imports = dict(imports=['stl_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(arch='tiny-hybrid', drop_path_rate=0.05))

# 16 GPUs x 128 = 2048 images per step at lr 4e-3; other totals scale the lr linearly.
train_dataloader = dict(batch_size=128)

# The frozen teacher: the FAN-T-Hybrid token labeler of stage 1.
default_hooks = dict(
    teacher=dict(
        model=dict(backbone=dict(arch='tiny-hybrid')),
        checkpoint='work_dirs/fan_t_token_labeler/epoch_350.pth'))
