# FocalNet-T (LRF, 3 focal levels) + Mask R-CNN, 1x. Published: box AP 46.1, mask AP 41.5.
_base_ = './mask-rcnn_focalnet-t-srf_fpn_1x_coco.py'

model = dict(backbone=dict(
    arch=dict(focal_levels=[3, 3, 3, 3]),
    init_cfg=dict(checkpoint='focalnet-tiny-lrf_in1k')))
