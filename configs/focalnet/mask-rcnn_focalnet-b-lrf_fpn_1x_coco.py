# FocalNet-B (LRF) + Mask R-CNN, 1x; drop_path 0.3. Published: box AP 49.0, mask AP 43.5.
_base_ = './mask-rcnn_focalnet-b-srf_fpn_1x_coco.py'

model = dict(backbone=dict(
    arch=dict(focal_levels=[3, 3, 3, 3]),
    init_cfg=dict(checkpoint='focalnet-base-lrf_in1k')))
