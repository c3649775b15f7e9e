# S3-S + Mask R-CNN + FPN, 3x multi-scale + crop: the Swin recipe of mask-rcnn_s3-t_fpn_ms-crop-3x_coco.py
# with S3-S, drop_path 0.2 (as Swin-S).
_base_ = './mask-rcnn_s3-t_fpn_ms-crop-3x_coco.py'

model = dict(backbone=dict(arch='small', init_cfg=dict(checkpoint='s3-small_in1k')))
