# Mask R-CNN with HRFormer-S and an HRFPN neck, COCO 1x (12 epochs, batch 16).
# HRFormer has no official detection recipe; this one follows mmdet's HRNet Mask R-CNN (HRFPN neck,
# 1x schedule) with the transformer optimiser of mmdet's Swin Mask R-CNN 1x: AdamW lr 1e-4, weight
# decay 0.05 without decay on norms and relative position tables, drop path 0.2, SyncBN.
_base_ = 'mmdet::hrnet/mask-rcnn_hrnetv2p-w32-1x_coco.py'

custom_imports = dict(imports=['backbones'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='backbones.HRFormer',
        arch='small',
        drop_path_rate=0.2,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        init_cfg=dict(type='Pretrained', checkpoint='hrformer-small_in1k')),
    neck=dict(type='HRFPN', in_channels=[32, 64, 128, 256], out_channels=256))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0,
                       custom_keys={'relative_position_bias_table': dict(decay_mult=0.)}))
