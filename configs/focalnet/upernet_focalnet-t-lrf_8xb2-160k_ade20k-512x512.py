# FocalNet-T (LRF) + UperNet, ADE20K 160k. Published: mIoU 46.8 (MS 47.8).
_base_ = './upernet_focalnet-t-srf_8xb2-160k_ade20k-512x512.py'

model = dict(backbone=dict(
    arch=dict(focal_levels=[3, 3, 3, 3]),
    init_cfg=dict(checkpoint='focalnet-tiny-lrf_in1k')))
