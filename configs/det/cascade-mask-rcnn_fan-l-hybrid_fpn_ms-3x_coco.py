# Cascade Mask R-CNN, FAN-L-Hybrid backbone, FPN, multi-scale 3x, COCO (FAN/STL Table 5).
# Recipe: ./_base_/cascade-mask-rcnn_fan-hybrid_fpn_ms-3x_coco.py.
_base_ = ['./_base_/cascade-mask-rcnn_fan-hybrid_fpn_ms-3x_coco.py']

# ImageNet-1k FAN-L-Hybrid weights: an official release (timm layout) or a stl_mm classifier
# checkpoint (tools/train.py on configs/fan or configs/stl); the backbone reads either.
#   official: no ImageNet-1k FAN-L-Hybrid checkpoint was released (its STL student
#   fan_large_16_p4_hybrid_token is, on Google Drive; see NVlabs/STL)
checkpoint = 'checkpoints/fan_hybrid_large.pth.tar'

model = dict(
    backbone=dict(
        arch='large-hybrid',
        # Raw weights, as the official recipe: its mmdet 2.x `pretrained=` goes through mmcv's
        # load_checkpoint, which reads the file's 'state_dict' (a timm checkpoint keeps the EMA
        # weights apart, in 'state_dict_ema'). use_ema=True would start from the EMA weights.
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint, prefix='backbone.', use_ema=False)),
    # Stem stages (128, 256), FAN tokens (480), learnable downsample (768).
    neck=dict(in_channels=[128, 256, 480, 768]))
