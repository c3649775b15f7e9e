# FocalNet-T (LRF) + Mask R-CNN, 3x; drop_path 0.3. Published: box AP 48.0, mask AP 42.9.
_base_ = './mask-rcnn_focalnet-t-srf_fpn_ms-crop-3x_coco.py'

model = dict(backbone=dict(
    arch=dict(focal_levels=[3, 3, 3, 3]),
    init_cfg=dict(checkpoint='focalnet-tiny-lrf_in1k')))
