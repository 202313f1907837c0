# STL stage 2 with a FAN-S-ViT: the student on ImageNet-1K (paper Eq. 5), as
# configs/stl/fan_s_student.py with the plain-ViT backbone for student and teacher (our
# extension, no official model). Both have a 14x14 token grid at 224x224, as the hybrids.
# drop_path_rate 0.2 is that of the official FAN-S-ViT run (NVlabs/FAN
# scripts/fan_vit/fan_net_small.sh); the rest is the STL recipe of the hybrids, so that the FAN-ViT
# baseline, token labeler and student compare like for like.
_base_ = [
    '../_base_/models/fan_hybrid_in1k_student.py',
    '../_base_/datasets/imagenet_bs128_stl_dual_view_224.py',
    '../_base_/schedules/imagenet_bs2048_adamw_fan_350e.py',
]
custom_imports = dict(imports=['stl_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(arch='small', drop_path_rate=0.2))

# 16 GPUs x 128 = 2048 images per step at lr 4e-3; other totals scale the lr linearly.
train_dataloader = dict(batch_size=128)

# The frozen teacher: the FAN-S-ViT token labeler of stage 1.
default_hooks = dict(
    teacher=dict(
        model=dict(backbone=dict(arch='small')),
        checkpoint='work_dirs/fan_s_vit_token_labeler/epoch_350.pth'))
