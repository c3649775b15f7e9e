# S3-T + Cascade Mask R-CNN (4conv-1fc box heads with SyncBN and GIoU loss), 3x, COCO: the official Swin-T
# cascade recipe (Swin-Transformer-Object-Detection cascade_mask_rcnn_swin_tiny_patch4_window7_mstrain_480-800
# _giou_4conv1f_adamw_3x_coco.py: multi-scale 480-800 + crop, AdamW lr 1e-4, weight decay 0.05, 36 epochs with
# steps at 27 and 33), drop_path 0.2 as Swin-T. The recipe is written once, in the FocalNet config below (the
# FocalNet authors ran the same Swin recipe); only the backbone is swapped.
_base_ = '../focalnet/cascade-mask-rcnn_focalnet-t-lrf_fpn_4conv1fc-giou_ms-crop-3x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='backbones.S3',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='s3-tiny_in1k')),
    neck=dict(in_channels=[96, 192, 384, 768]))
