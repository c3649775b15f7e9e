# S3-T + Mask R-CNN + FPN, 1x schedule, COCO. The S3 authors published no detection recipe or weights; this
# is the Swin-T recipe S3 is a variant of (mmdet 3.3.0 swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py, from
# the official Swin detection code): AdamW lr 1e-4, weight decay 0.05 (none on norms and relative position
# tables), 12 epochs with steps at 8 and 11, 1000-iteration warm-up, drop_path 0.2, 2 images x 8 GPUs.
# S3 keeps its searched windows (7/7/14/7) and loads the ImageNet S3-T weights unchanged.
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'

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
