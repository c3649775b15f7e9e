# S3-S + Mask R-CNN + FPN, 1x, COCO: the Swin recipe of mask-rcnn_s3-t_fpn_1x_coco.py with S3-S (windows 14)
# and drop_path 0.2 (Swin-S's detection value).
_base_ = './mask-rcnn_s3-t_fpn_1x_coco.py'

model = dict(backbone=dict(arch='small', init_cfg=dict(checkpoint='s3-small_in1k')))
