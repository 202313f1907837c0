# The FAN / STL ImageNet-1K recipe of imagenet_bs2048_adamw_fan_350e.py with the 10-epoch
# linear warm-up of the FAN-B/L runs (NVlabs/STL scripts) instead of 5.
_base_ = './imagenet_bs2048_adamw_fan_350e.py'

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6 / 4e-3, by_epoch=True, begin=0, end=10,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=True, begin=10,
         convert_to_iter_based=True),
]
