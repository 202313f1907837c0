# STL stage 2 with a smaller teacher (paper Table 8, its best pairing): the FAN-L-Hybrid
# student learns from the token labels of the FAN-B-Hybrid token labeler
# (configs/stl/fan_b_token_labeler.py). Same grid (both stride 16 at 224x224); otherwise as
# configs/stl/fan_l_student.py.
_base_ = [
    '../_base_/models/fan_hybrid_in1k_student.py',
    '../_base_/datasets/imagenet_bs128_stl_dual_view_224.py',
    '../_base_/schedules/imagenet_bs2048_adamw_fan_350e_warmup10.py',
]
custom_imports = dict(imports=['stl_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(arch='large-hybrid', drop_path_rate=0.45))

# 32 GPUs x 64 = 2048 images per step at lr 4e-3; other totals scale the lr linearly.
train_dataloader = dict(batch_size=64)

# The frozen teacher: the FAN-B-Hybrid token labeler of stage 1.
default_hooks = dict(
    teacher=dict(
        model=dict(backbone=dict(arch='base-hybrid')),
        checkpoint='work_dirs/fan_b_token_labeler/epoch_350.pth'))
