# FocalNet-T (LRF) + Sparse R-CNN (300 proposals), multi-scale 480-800 + crop, 3x, COCO.
# Official: sparse_rcnn_focalnet_tiny_fpn_300_proposals_crop_mstrain_480-800_3x_coco_lrf.py: per-stage focal
# windows [11, 9, 9, 7], drop_path 0.3; the rest (AdamW lr 2.5e-5, weight decay 1e-4, gradient clip 1,
# 36 epochs, steps at 27 and 33) is the standard Sparse R-CNN recipe of the mmdet base below. Published: box AP 49.9.
_base_ = 'mmdet::sparse_rcnn/sparse-rcnn_r50_fpn_300-proposals_crop-ms-480-800-3x_coco.py'

custom_imports = dict(imports=['backbones'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='backbones.FocalNet',
        arch=dict(embed_dim=96, depths=[2, 2, 6, 2], focal_levels=[3, 3, 3, 3], focal_windows=[11, 9, 9, 7]),
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='focalnet-tiny-lrf_in1k')),
    neck=dict(in_channels=[96, 192, 384, 768]))
