# OCRNet with HRFormer-S on PASCAL-Context (59 classes), 520x520 crops, 60k iterations, batch 16: the
# official recipe (HRNet/HRFormer seg/scripts/pascal_context/hrt/run_hrt_small_ocr_v2_ohem.sh and
# seg/configs/pascal_context/H_48_D_4.json, openseg codebase): AdamW lr 1e-4, weight decay 0.01 without
# decay on norms and relative position tables, linear warm-up (1500 iterations) then poly decay, drop path
# 0.2, SyncBN, OHEM on the OCR head, auxiliary head weight 0.4. mmseg's PASCAL-Context-59 pipeline with
# the official crop size.
_base_ = [
    'mmseg::_base_/models/ocrnet_hr18.py', 'mmseg::_base_/datasets/pascal_context_59.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_80k.py'
]

custom_imports = dict(imports=['backbones'], allow_failed_imports=False)

crop_size = (520, 520)
norm_cfg = dict(type='SyncBN', requires_grad=True)
hrformer_channels = [32, 64, 128, 256]
num_classes = 59
model = dict(
    pretrained=None,
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        _delete_=True,
        type='backbones.HRFormer',
        arch='small',
        drop_path_rate=0.2,
        norm_cfg=norm_cfg,
        init_cfg=dict(type='Pretrained', checkpoint='hrformer-small_in1k')),
    decode_head=[
        dict(
            type='FCNHead',
            in_channels=hrformer_channels,
            channels=sum(hrformer_channels),
            in_index=(0, 1, 2, 3),
            input_transform='resize_concat',
            kernel_size=1,
            num_convs=1,
            concat_input=False,
            dropout_ratio=-1,
            num_classes=num_classes,
            norm_cfg=norm_cfg,
            align_corners=False,
            loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
        dict(
            type='OCRHead',
            in_channels=hrformer_channels,
            in_index=(0, 1, 2, 3),
            input_transform='resize_concat',
            channels=512,
            ocr_channels=256,
            dropout_ratio=-1,
            num_classes=num_classes,
            norm_cfg=norm_cfg,
            align_corners=False,
            sampler=dict(type='OHEMPixelSampler', thresh=0.7, min_kept=100000),
            loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    ])

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(520, 520), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))

max_iters = 60000
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(norm_decay_mult=0.0,
                       custom_keys={'relative_position_bias_table': dict(decay_mult=0.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=0.9, eta_min=0.0, by_epoch=False, begin=1500, end=max_iters),
]
train_cfg = dict(max_iters=max_iters)
