# FocalNet-S (LRF) + Mask R-CNN, 1x; drop_path 0.2. Published: box AP 48.3, mask AP 43.1.
_base_ = './mask-rcnn_focalnet-s-srf_fpn_1x_coco.py'

model = dict(backbone=dict(
    arch=dict(focal_levels=[3, 3, 3, 3]),
    init_cfg=dict(checkpoint='focalnet-small-lrf_in1k')))
