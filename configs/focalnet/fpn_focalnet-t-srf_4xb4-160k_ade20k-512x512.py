# FocalNet-T (SRF) + Semantic FPN, ADE20K 512x512. NOT an official FocalNet recipe: mmseg's Semantic FPN base
# (4 GPUs x 4 images, 160k iterations, poly schedule) with the FocalNet segmentation focal windows 9 and the
# AdamW optimizer of the PVT/Twins Semantic FPN recipes (lr 1e-4, weight decay 1e-4, no decay on norms).
_base_ = 'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py'

custom_imports = dict(imports=['backbones'], allow_failed_imports=False)

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='backbones.FocalNet',
        arch=dict(embed_dim=96, depths=[2, 2, 6, 2], focal_levels=[2, 2, 2, 2], focal_windows=[9, 9, 9, 9]),
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='focalnet-tiny-srf_in1k')),
    neck=dict(in_channels=[96, 192, 384, 768]))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))
