# FocalNet-S (SRF) + Mask R-CNN, 1x; drop_path 0.2. Published: box AP 48.0, mask AP 42.7.
_base_ = './mask-rcnn_focalnet-t-srf_fpn_1x_coco.py'

model = dict(backbone=dict(
    arch=dict(depths=[2, 2, 18, 2]),
    drop_path_rate=0.2,
    init_cfg=dict(checkpoint='focalnet-small-srf_in1k')))
