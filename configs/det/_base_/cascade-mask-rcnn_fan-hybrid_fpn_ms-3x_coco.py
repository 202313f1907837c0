# Cascade Mask R-CNN with a FAN-Hybrid backbone on COCO: the recipe of the FAN paper (Table 5) and
# of its official detection configs, for mmdet 3.3. The size configs beside this file choose the
# backbone preset, its ImageNet checkpoint and the FPN input widths.
#
# - Backbone: FAN-Hybrid in dense mode, four maps at strides 4, 8, 16, 32 (the two ConvNeXt stem
#   stages, the tokens after the preset's tapped block, and a learnable stride-2 downsample of the
#   final tokens), stochastic depth 0.3. The official runs also checkpointed activations
#   (model.backbone.with_cp=True: less memory, slower).
# - Heads: three cascade stages with 4 shared 3x3 convs (SyncBN) + 1 FC, class-specific box
#   regression trained with GIoU loss on decoded boxes; the FCN mask head.
# - Data: DETR-style multi-scale training (short side 480-800 step 32, long side <= 1333, or a
#   random crop between two resizes); test at 1333x800.
# - Schedule: AdamW lr 1e-4, wd 0.05 (none on parameters named *norm*), 36 epochs, x0.1 at 27
#   and 33, 500 linear warm-up iterations; total batch 16 (8 GPUs x 2 images).
#
# Mixed precision (the official runs used fp16): tools/train.py CONFIG --amp.
# SyncBN: with tools/dist_train.sh on GPUs it synchronises; a single-process tools/train.py or
# tools/test.py run works too (mmengine's runner turns SyncBN back into BN when not distributed).
# torch's SyncBN cannot run on CPU processes (gloo): CPU ranks turn it into BN automatically.
_base_ = [
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['stl_mm'], allow_failed_imports=False)

num_classes = 80
# Not named `head_norm_cfg`: mmdet's tools/analysis_tools/get_flops.py takes a config with that
# variable for one with a single bbox_head dict and fails on the cascade's list of three heads.
bbox_head_norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='CascadeRCNN',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_mask=True,
        pad_size_divisor=32),
    backbone=dict(type='FAN', dense=True, out_indices=(0, 1, 2, 3), drop_path_rate=0.3),
    neck=dict(type='FPN', out_channels=256, num_outs=5),
    rpn_head=dict(
        type='RPNHead',
        in_channels=256,
        feat_channels=256,
        anchor_generator=dict(
            type='AnchorGenerator', scales=[8], ratios=[0.5, 1.0, 2.0],
            strides=[4, 8, 16, 32, 64]),
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder', target_means=[0.] * 4, target_stds=[1.0] * 4),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
        loss_bbox=dict(type='SmoothL1Loss', beta=1.0 / 9.0, loss_weight=1.0)),
    roi_head=dict(
        type='CascadeRoIHead',
        num_stages=3,
        stage_loss_weights=[1, 0.5, 0.25],
        bbox_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
            out_channels=256,
            featmap_strides=[4, 8, 16, 32]),
        # One head per stage; later stages regress finer offsets (smaller target_stds).
        bbox_head=[
            dict(
                type='Shared4Conv1FCBBoxHead',
                in_channels=256,
                conv_out_channels=256,
                fc_out_channels=1024,
                roi_feat_size=7,
                num_classes=num_classes,
                norm_cfg=bbox_head_norm_cfg,
                bbox_coder=dict(
                    type='DeltaXYWHBBoxCoder', target_means=[0.] * 4, target_stds=stds),
                reg_class_agnostic=False,
                reg_decoded_bbox=True,
                loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                loss_bbox=dict(type='GIoULoss', loss_weight=10.0))
            for stds in ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
                         [0.033, 0.033, 0.067, 0.067])
        ],
        mask_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0),
            out_channels=256,
            featmap_strides=[4, 8, 16, 32]),
        mask_head=dict(
            type='FCNMaskHead',
            num_convs=4,
            in_channels=256,
            conv_out_channels=256,
            num_classes=num_classes,
            loss_mask=dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0))),
    train_cfg=dict(
        rpn=dict(
            assigner=dict(
                type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3,
                match_low_quality=True, ignore_iof_thr=-1),
            sampler=dict(
                type='RandomSampler', num=256, pos_fraction=0.5, neg_pos_ub=-1,
                add_gt_as_proposals=False),
            allowed_border=0,
            pos_weight=-1,
            debug=False),
        rpn_proposal=dict(
            nms_pre=2000, max_per_img=2000, nms=dict(type='nms', iou_threshold=0.7),
            min_bbox_size=0),
        # Stage i counts a proposal as positive above IoU 0.5, 0.6, 0.7.
        rcnn=[
            dict(
                assigner=dict(
                    type='MaxIoUAssigner', pos_iou_thr=iou, neg_iou_thr=iou, min_pos_iou=iou,
                    match_low_quality=False, ignore_iof_thr=-1),
                sampler=dict(
                    type='RandomSampler', num=512, pos_fraction=0.25, neg_pos_ub=-1,
                    add_gt_as_proposals=True),
                mask_size=28,
                pos_weight=-1,
                debug=False)
            for iou in (0.5, 0.6, 0.7)
        ]),
    test_cfg=dict(
        rpn=dict(
            nms_pre=1000, max_per_img=1000, nms=dict(type='nms', iou_threshold=0.7),
            min_bbox_size=0),
        rcnn=dict(
            score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5), max_per_img=100,
            mask_thr_binary=0.5)))

# Short side drawn from 480..800 (step 32), long side capped at 1333; or, half of the time,
# resize to 400/500/600, crop 384-600 pixels and resize again (DETR / Sparse R-CNN style).
multi_scales = [(short, 1333) for short in range(480, 801, 32)]
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [dict(type='RandomChoiceResize', scales=multi_scales, keep_ratio=True)],
            [
                dict(
                    type='RandomChoiceResize',
                    scales=[(400, 1333), (500, 1333), (600, 1333)],
                    keep_ratio=True),
                dict(
                    type='RandomCrop',
                    crop_type='absolute_range',
                    crop_size=(384, 600),
                    allow_negative_crop=True),
                dict(type='RandomChoiceResize', scales=multi_scales, keep_ratio=True),
            ],
        ]),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(batch_size=2, num_workers=2, dataset=dict(pipeline=train_pipeline))

max_epochs = 36
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[27, 33],
        gamma=0.1),
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    # As the official configs: no weight decay for parameters whose name contains 'norm' (the
    # LayerNorms of the FAN and ConvNeXt blocks; FAN keeps the official parameter names).
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))
# The learning rate above is for 16 images per iteration; --cfg-options auto_scale_lr.enable=True
# scales it linearly to another total batch size.
auto_scale_lr = dict(enable=False, base_batch_size=16)

default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3))
