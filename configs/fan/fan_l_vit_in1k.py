# FAN-L-ViT baseline on ImageNet-1K without token labels (class loss only).
# Official model: fan_large_24_p16_224; no file of it was released (the FAN paper trained
# 300 epochs).
# drop_path_rate 0.3 is that of the official FAN-L-ViT run (NVlabs/FAN
# scripts/fan_vit/fan_net_large.sh); the rest is the STL recipe of the hybrids, so that the FAN-ViT
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
    backbone=dict(arch='large', drop_path_rate=0.3),
    head=dict(with_token_head=False))

# 32 GPUs x 64 = 2048 images per step at lr 4e-3; other totals scale the lr linearly.
train_dataloader = dict(batch_size=64)
