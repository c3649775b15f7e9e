# FocalNet-S (SRF) + Mask R-CNN, 3x; drop_path 0.5. Published: box AP 48.9, mask AP 43.6.
_base_ = './mask-rcnn_focalnet-t-srf_fpn_ms-crop-3x_coco.py'

model = dict(backbone=dict(
    arch=dict(depths=[2, 2, 18, 2]),
    drop_path_rate=0.5,
    init_cfg=dict(checkpoint='focalnet-small-srf_in1k')))
