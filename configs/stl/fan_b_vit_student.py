# STL stage 2 with a FAN-B-ViT: the student on ImageNet-1K (paper Eq. 5), as
# configs/stl/fan_b_student.py with the plain-ViT backbone for student and teacher (our
# extension, no official model). Both have a 14x14 token grid at 224x224, as the hybrids.
# drop_path_rate 0.35 is that of the official FAN-B-ViT run (NVlabs/FAN
# scripts/fan_vit/fan_net_base.sh); the rest is the STL recipe of the hybrids, so that the FAN-ViT
# baseline, token labeler and student compare like for like.
_base_ = [
    '../_base_/models/fan_hybrid_in1k_student.py',
    '../_base_/datasets/imagenet_bs128_stl_dual_view_224.py',
    '../_base_/schedules/imagenet_bs2048_adamw_fan_350e.py',
]
custom_imports = dict(imports=['stl_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(arch='base', drop_path_rate=0.35))

# 32 GPUs x 64 = 2048 images per step at lr 4e-3; other totals scale the lr linearly.
train_dataloader = dict(batch_size=64)

# The frozen teacher: the FAN-B-ViT token labeler of stage 1.
default_hooks = dict(
    teacher=dict(
        model=dict(backbone=dict(arch='base')),
        checkpoint='work_dirs/fan_b_vit_token_labeler/epoch_350.pth'))
