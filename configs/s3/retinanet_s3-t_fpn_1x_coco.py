# S3-T + RetinaNet, 1x, COCO: mmdet 3.3.0's Swin-T RetinaNet (swin/retinanet_swin-t-p4-w7_fpn_1x_coco.py:
# outputs of stages 1-3, FPN from level 0 with 5 outputs, its optimizer and schedule) with S3-T, drop_path 0.2.
_base_ = 'mmdet::swin/retinanet_swin-t-p4-w7_fpn_1x_coco.py'

custom_imports = dict(imports=['backbones'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='backbones.S3',
        arch='tiny',
        out_indices=(1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='s3-tiny_in1k')),
    neck=dict(in_channels=[192, 384, 768]))
