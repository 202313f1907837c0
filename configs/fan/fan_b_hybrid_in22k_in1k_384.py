# FAN-B-Hybrid pre-trained on ImageNet-22K and fine-tuned on ImageNet-1K at 384x384 (official
# model fan_base_16_p4_hybrid, released as fan_hybrid_base_in22k_1k_384.pth.tar): evaluation
# only. No ImageNet-22K pre-training or fine-tuning recipe was published (NVlabs/FAN lists that
# code as not released), so this config has no training part; `tools/test.py` and the model zoo
# use it.
_base_ = [
    '../_base_/models/fan_hybrid_in1k.py',
    '../_base_/datasets/imagenet_bs128_fan_224.py',
    '../_base_/default_runtime.py',
]
custom_imports = dict(imports=['stl_mm'], allow_failed_imports=False)

model = dict(
    mode='plain',
    backbone=dict(arch='base-hybrid'),
    head=dict(with_token_head=False))

train_dataloader = None

# FAN's evaluation crop fraction 1.0 at 384: resize the short side to 384, crop 384x384.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=384, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=384),
    dict(type='PackInputs'),
]
val_dataloader = dict(batch_size=64, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
