# FocalNet-B (LRF) + UperNet, ADE20K 160k. Published: mIoU 50.5 (MS 51.4).
_base_ = './upernet_focalnet-t-srf_8xb2-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch=dict(embed_dim=128, depths=[2, 2, 18, 2], focal_levels=[3, 3, 3, 3]),
        init_cfg=dict(checkpoint='focalnet-base-lrf_in1k')),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
