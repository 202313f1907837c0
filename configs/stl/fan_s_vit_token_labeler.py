# STL stage 1 with a FAN-S-ViT: the token labeler on ImageNet-1K (paper Eq. 2), as
# configs/stl/fan_s_token_labeler.py with the plain-ViT backbone (the STL paper trains
# hybrids only; this is our extension, no official model). Its last checkpoint,
# work_dirs/fan_s_vit_token_labeler/epoch_350.pth, is the teacher of
# configs/stl/fan_s_vit_student.py.
# drop_path_rate 0.2 is that of the official FAN-S-ViT run (NVlabs/FAN
# scripts/fan_vit/fan_net_small.sh); the rest is the STL recipe of the hybrids, so that the FAN-ViT
# baseline, token labeler and student compare like for like.
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
    backbone=dict(arch='small', drop_path_rate=0.2))

# 16 GPUs x 128 = 2048 images per step at lr 4e-3; other totals scale the lr linearly.
train_dataloader = dict(batch_size=128)
