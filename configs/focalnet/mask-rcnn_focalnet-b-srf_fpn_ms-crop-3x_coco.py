# FocalNet-B (SRF) + Mask R-CNN, 3x; drop_path 0.5. Published: box AP 49.6, mask AP 44.1.
_base_ = './mask-rcnn_focalnet-t-srf_fpn_ms-crop-3x_coco.py'

model = dict(
    backbone=dict(
        arch=dict(embed_dim=128, depths=[2, 2, 18, 2]),
        drop_path_rate=0.5,
        init_cfg=dict(checkpoint='focalnet-base-srf_in1k')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
