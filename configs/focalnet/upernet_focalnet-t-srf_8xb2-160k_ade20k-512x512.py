# FocalNet-T (SRF) + UperNet, ADE20K 512x512, 160k iterations, 16 images per iteration.
# Official: segmentation/configs/focalnet/upernet_focalnet_tiny_patch4_512x512_160k_ade20k_srf.py: focal
# windows 9, drop_path 0.3, AdamW lr 6e-5, weight decay 0.01 (no decay on norms), poly schedule (power 1) after a
# 1500-iteration linear warm-up: the recipe of mmseg's Swin UperNet base below. Published: mIoU 46.5 (MS 47.2).
_base_ = 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'

custom_imports = dict(imports=['backbones'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='backbones.FocalNet',
        arch=dict(embed_dim=96, depths=[2, 2, 6, 2], focal_levels=[2, 2, 2, 2], focal_windows=[9, 9, 9, 9]),
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='focalnet-tiny-srf_in1k')),
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150))

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(_delete_=True, custom_keys={'norm': dict(decay_mult=0.)}))
