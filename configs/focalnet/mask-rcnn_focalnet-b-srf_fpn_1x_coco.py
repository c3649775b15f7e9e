# FocalNet-B (SRF) + Mask R-CNN, 1x; drop_path 0.3. Published: box AP 48.8, mask AP 43.3.
_base_ = './mask-rcnn_focalnet-t-srf_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch=dict(embed_dim=128, depths=[2, 2, 18, 2]),
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint='focalnet-base-srf_in1k')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
