# ImageNet-1K evaluation at 384x384 with FAN's crop fraction 1.0: the short side resized to 384,
# then a 384x384 centre crop (the 224 settings otherwise).
_base_ = ['./imagenet_bs128_fan_224.py']

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=384, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=384),
    dict(type='PackInputs'),
]
val_dataloader = dict(batch_size=64, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
