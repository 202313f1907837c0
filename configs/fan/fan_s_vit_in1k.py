# FAN-S-ViT baseline on ImageNet-1K without token labels (class loss only).
# Official model: fan_small_12_p16_224, released as fan_vit_small.pth.tar;
# the FAN paper trained it 300 epochs.
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
    mode='plain',
    backbone=dict(arch='small', drop_path_rate=0.2),
    head=dict(with_token_head=False))

# 16 GPUs x 128 = 2048 images per step at lr 4e-3; other totals scale the lr linearly.
train_dataloader = dict(batch_size=128)
