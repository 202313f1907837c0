# Cascade Mask R-CNN, FAN-B-Hybrid backbone trained with STL, FPN, multi-scale 3x, COCO (STL,
# ICCV 2023, Table 5). Recipe: ./_base_/cascade-mask-rcnn_fan-hybrid_fpn_ms-3x_coco.py (the STL
# and FAN repositories share every detection config line).
#
# STL's detection backbone (NVlabs/STL detection/models/fan.py, class
# fan_base_12_p4_hybrid) is the FAN one plus a learnable LayerNorm over the channels of each
# of the four outputs before the FPN (out_norm0..3): out_norms=True. STL detection checkpoints
# hold those keys and load into this config (tools/test.py, load_from); the FAN-B-Hybrid
# config beside this one has no norms and refuses such files, saying to set out_norms=True.
_base_ = ['./_base_/cascade-mask-rcnn_fan-hybrid_fpn_ms-3x_coco.py']

# ImageNet-1k weights: the STL student fan_base_16_p4_hybrid_token
# (NVlabs/STL README, Google Drive; download it by hand, no conversion needed) or a stl_mm
# checkpoint of configs/stl (FAN-Hybrid students).
#   published: https://drive.google.com/file/d/1d7Yi48eEL7X68CfQ62dG69PRHe5LEnWG/view?usp=sharing  # noqa: E501
checkpoint = 'checkpoints/fan_base_16_p4_hybrid_token.pth.tar'

model = dict(
    backbone=dict(
        arch='base-hybrid',
        out_norms=True,
        # Raw weights, as the official recipe: its mmdet 2.x `pretrained=` goes through mmcv's
        # load_checkpoint, which reads the file's 'state_dict' (a timm checkpoint keeps the EMA
        # weights apart, in 'state_dict_ema'). The new output norms start at weight 1, bias 0.
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint, prefix='backbone.', use_ema=False)),
    # Stem stages (128, 256), FAN tokens (448), learnable downsample (768).
    neck=dict(in_channels=[128, 256, 448, 768]))
