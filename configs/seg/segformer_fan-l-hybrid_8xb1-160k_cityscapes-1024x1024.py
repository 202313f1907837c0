# FAN-L-Hybrid encoder + SegFormer head, Cityscapes 1024x1024, 160k iterations on 8 GPUs x 1 image
# (recipe and data pipeline in the _base_ file).
_base_ = './_base_/segformer_fan-hybrid_cityscapes-1024x1024.py'

# ImageNet-1k weights of the encoder: an stl_mm checkpoint (FAN or STL, mmpretrain layout), or an
# official FAN / STL release (fan_large_16_p4_hybrid, timm layout).
pretrained = 'checkpoints/fan_large_16_p4_hybrid_in1k.pth'

model = dict(
    backbone=dict(
        arch='large-hybrid',
        # Raw weights, as the official recipe: its EncoderDecoder(pretrained=...) goes through
        # mmcv's load_checkpoint, which reads the file's 'state_dict' (a timm checkpoint keeps
        # the EMA weights apart, in 'state_dict_ema'). use_ema=True would start from the EMA ones.
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.', use_ema=False)),
    # Widths of the four levels: stem strides 4 and 8, then the token width twice (stride 16).
    decode_head=dict(in_channels=[128, 256, 480, 480]))
