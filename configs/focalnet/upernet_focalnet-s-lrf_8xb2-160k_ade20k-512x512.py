# FocalNet-S (LRF) + UperNet, ADE20K 160k. Published: mIoU 49.1 (MS 50.1).
_base_ = './upernet_focalnet-t-srf_8xb2-160k_ade20k-512x512.py'

model = dict(backbone=dict(
    arch=dict(depths=[2, 2, 18, 2], focal_levels=[3, 3, 3, 3]),
    init_cfg=dict(checkpoint='focalnet-small-lrf_in1k')))
