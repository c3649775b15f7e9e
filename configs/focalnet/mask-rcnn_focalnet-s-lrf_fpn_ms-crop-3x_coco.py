# FocalNet-S (LRF) + Mask R-CNN, 3x; drop_path 0.5. Published: box AP 49.3, mask AP 43.8.
_base_ = './mask-rcnn_focalnet-t-srf_fpn_ms-crop-3x_coco.py'

model = dict(backbone=dict(
    arch=dict(depths=[2, 2, 18, 2], focal_levels=[3, 3, 3, 3]),
    drop_path_rate=0.5,
    init_cfg=dict(checkpoint='focalnet-small-lrf_in1k')))
