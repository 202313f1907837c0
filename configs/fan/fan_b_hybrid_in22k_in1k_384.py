# FAN-B-Hybrid pre-trained on ImageNet-22K and fine-tuned on ImageNet-1K at 384x384 (official
# model fan_base_16_p4_hybrid, released as fan_hybrid_base_in22k_1k_384.pth.tar): evaluation
# only. No ImageNet-22K pre-training or fine-tuning recipe was published (NVlabs/FAN lists that
# code as not released), so this config has no training part; `tools/test.py` and the model zoo
# use it.
_base_ = [
    '../_base_/models/fan_hybrid_in1k.py',
    '../_base_/datasets/imagenet_bs64_fan_384_test.py',
    '../_base_/default_runtime.py',
]
custom_imports = dict(imports=['stl_mm'], allow_failed_imports=False)

model = dict(
    mode='plain',
    backbone=dict(arch='base-hybrid'),
    head=dict(with_token_head=False))

train_dataloader = None
