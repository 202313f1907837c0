# Training recipe of FAN and STL on ImageNet-1K (NVlabs/STL scripts): AdamW, lr 4e-3 for a
# total batch of 2048, 350 epochs of cosine decay to 1e-6 after a linear warm-up from 1e-6,
# weight decay 0.05 except on norms, biases, layer scales, the class token and the positional
# encoding, and an EMA of the weights with decay 0.99992.
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=4e-3, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    paramwise_cfg=dict(
        # timm's optimizer factory exempts every 1-D parameter (norm weights, biases, layer
        # scales) from weight decay; flat_decay_mult is mmengine's rule for exactly these.
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0,
        custom_keys={
            '.cls_token': dict(decay_mult=0.0),
            '.pos_embed': dict(decay_mult=0.0),
        }),
)

# The lr above is for 2048 images per step and scales linearly with the real total batch
# (GPUs x train_dataloader.batch_size): 8 GPUs x 128 train with 2e-3, as the official T/S runs.
auto_scale_lr = dict(base_batch_size=2048, enable=True)

# Warm-up of 5 epochs (FAN-T/S); FAN-B/L use imagenet_bs2048_adamw_fan_350e_warmup10.py.
# The cosine phase ends at train_cfg.max_epochs (mmengine's default `end`).
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6 / 4e-3, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=True, begin=5,
         convert_to_iter_based=True),
]

# The official runs add 10 cooldown epochs at the minimum lr (timm's default); to mimic them:
# --cfg-options train_cfg.max_epochs=360 param_scheduler.1.end=350
train_cfg = dict(by_epoch=True, max_epochs=350, val_interval=1)
val_cfg = dict()
test_cfg = dict()

# EMA of the weights and buffers (timm's ModelEmaV2 averages both): mmengine's momentum is
# 1 - decay = 1 - 0.99992. Validation and the saved `state_dict` use the EMA weights.
custom_hooks = [
    dict(type='EMAHook', momentum=8e-5, update_buffers=True, priority='ABOVE_NORMAL'),
]
