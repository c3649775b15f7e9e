# OCRNet with HRFormer-B on Cityscapes: the HRFormer-S recipe with the base backbone
# (official run_hrt_base_ocr_v2_ohem.sh; drop path 0.2).
_base_ = './ocrnet_hrformer-s_8xb1-80k_cityscapes-512x1024.py'

norm_cfg = dict(type='SyncBN', requires_grad=True)
hrformer_channels = [78, 156, 312, 624]
num_classes = 19
model = dict(
    backbone=dict(arch='base', init_cfg=dict(type='Pretrained', checkpoint='hrformer-base_in1k')),
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
