# FocalNet-B (SRF) + UperNet, ADE20K 160k. Published: mIoU 50.2 (MS 51.1).
_base_ = './upernet_focalnet-t-srf_8xb2-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch=dict(embed_dim=128, depths=[2, 2, 18, 2]),
        init_cfg=dict(checkpoint='focalnet-base-srf_in1k')),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
