# STL stage 2: the FAN-B-Hybrid student on ImageNet-1K (paper Eq. 5): class loss
# + beta * mean over tokens of CE(token logits, token labels of the frozen stage-1 teacher),
# beta = 1. Student and teacher see two views of each image (see the dual-view dataset file).
# Official recipe: NVlabs/STL scripts/fan_stl_student/mn_fan_base_stl.sh
# (64 per GPU on 8-GPU nodes, lr 4e-3).
_base_ = [
    '../_base_/models/fan_hybrid_in1k_student.py',
    '../_base_/datasets/imagenet_bs128_stl_dual_view_224.py',
    '../_base_/schedules/imagenet_bs2048_adamw_fan_350e_warmup10.py',
]
custom_imports = dict(imports=['stl_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(arch='base-hybrid', drop_path_rate=0.35))

# 32 GPUs x 64 = 2048 images per step at lr 4e-3; other totals scale the lr linearly.
train_dataloader = dict(batch_size=64)

# The frozen teacher: the FAN-B-Hybrid token labeler of stage 1.
default_hooks = dict(
    teacher=dict(
        model=dict(backbone=dict(arch='base-hybrid')),
        checkpoint='work_dirs/fan_b_token_labeler/epoch_350.pth'))
