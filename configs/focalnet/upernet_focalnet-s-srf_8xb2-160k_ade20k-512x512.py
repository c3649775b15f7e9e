# FocalNet-S (SRF) + UperNet, ADE20K 160k. Published: mIoU 49.3 (MS 50.1).
_base_ = './upernet_focalnet-t-srf_8xb2-160k_ade20k-512x512.py'

model = dict(backbone=dict(
    arch=dict(depths=[2, 2, 18, 2]),
    init_cfg=dict(checkpoint='focalnet-small-srf_in1k')))
