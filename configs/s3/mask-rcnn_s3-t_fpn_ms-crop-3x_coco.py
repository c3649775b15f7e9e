# S3-T + Mask R-CNN + FPN, 3x (36 epochs, steps at 27 and 33), multi-scale 480-800 training with the DETR-style
# crop branch: the Swin-T recipe (mmdet 3.3.0 swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py), drop_path 0.2.
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py'

custom_imports = dict(imports=['backbones'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='backbones.S3',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='s3-tiny_in1k')),
    neck=dict(in_channels=[96, 192, 384, 768]))
