# S3-B + Mask R-CNN + FPN, 1x, COCO: the Swin recipe of mask-rcnn_s3-t_fpn_1x_coco.py with S3-B and
# drop_path 0.3 (Swin-B's detection value).
_base_ = './mask-rcnn_s3-t_fpn_1x_coco.py'

model = dict(backbone=dict(arch='base', drop_path_rate=0.3, init_cfg=dict(checkpoint='s3-base_in1k')))
