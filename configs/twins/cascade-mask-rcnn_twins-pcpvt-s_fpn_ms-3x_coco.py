"""Cascade Mask R-CNN + Twins-PCPVT-S, COCO 3x multi-scale. Twins publishes no Cascade recipe; the optimizer
is that of its 3x Mask R-CNN "swin setting" (mask_rcnn_pcpvt_s_fpn_3x_coco_swin_setting.py): AdamW lr 1e-4,
betas (0.9, 0.999), weight decay 0.05 except PEG (pos_block) and norms, 36 epochs with steps 27/33 (the base
gives exactly that: 12 epochs over a 3x-repeated dataset, steps 9/11). The base's multi-scale resize replaces
the official DETR-style crop augmentation, and fp16 is left to the user (official: loss scale 512)."""
_base_ = 'mmdet::cascade_rcnn/cascade-mask-rcnn_r50_fpn_ms-3x_coco.py'
custom_imports = dict(imports=['backbones'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True, type='backbones.PCPVT', arch='small', out_indices=(0, 1, 2, 3), drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='twins-pcpvt-small_in1k')),
    neck=dict(in_channels=[64, 128, 320, 512]))

optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'pos_block': dict(decay_mult=0.0), 'norm': dict(decay_mult=0.0)}))
