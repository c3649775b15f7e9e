"""Mask R-CNN + Twins-PCPVT-S, COCO 1x: the official recipe (mask_rcnn_pcpvt_s_fpn_1x_coco_pvt_setting.py):
AdamW lr 2e-4, weight decay 1e-4, 12 epochs (steps 8/11, 500-iter linear warm-up, as the base); the dense
backbones use drop path 0.2."""
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['backbones'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True, type='backbones.PCPVT', arch='small', out_indices=(0, 1, 2, 3), drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='twins-pcpvt-small_in1k')),
    neck=dict(in_channels=[64, 128, 320, 512]))

optim_wrapper = dict(_delete_=True, type='OptimWrapper', optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4))
