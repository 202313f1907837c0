# FAN-S-Hybrid baseline on ImageNet-1K without token labels (class loss only), with
# the STL recipe so it compares like for like with configs/stl (the FAN paper's own runs,
# NVlabs/FAN scripts/fan_hybrid, used 300 epochs). Official model: fan_small_12_p4_hybrid.
_base_ = [
    '../_base_/models/fan_hybrid_in1k.py',
    '../_base_/datasets/imagenet_bs128_fan_224.py',
    '../_base_/schedules/imagenet_bs2048_adamw_fan_350e.py',
    '../_base_/default_runtime.py',
]
custom_imports = dict(imports=['stl_mm'], allow_failed_imports=False)

model = dict(
    mode='plain',
    backbone=dict(arch='small-hybrid', drop_path_rate=0.25),
    head=dict(with_token_head=False))

# 16 GPUs x 128 = 2048 images per step at lr 4e-3; other totals scale the lr linearly.
train_dataloader = dict(batch_size=128)
