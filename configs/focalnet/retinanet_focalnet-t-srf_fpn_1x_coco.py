# FocalNet-T (SRF) + RetinaNet, 1x, COCO. NOT an official FocalNet recipe (none was published): the model
# follows mmdet's Swin-T RetinaNet (outputs of stages 1-3, FPN from level 0 with 5 outputs), the backbone
# uses the FocalNet detection focal windows 9, and the optimizer is the FocalNet detection one (AdamW lr 1e-4,
# weight decay 0.05, no decay on norms) instead of the base's SGD.
_base_ = 'mmdet::swin/retinanet_swin-t-p4-w7_fpn_1x_coco.py'

custom_imports = dict(imports=['backbones'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='backbones.FocalNet',
        arch=dict(embed_dim=96, depths=[2, 2, 6, 2], focal_levels=[2, 2, 2, 2], focal_windows=[9, 9, 9, 9]),
        out_indices=(1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='focalnet-tiny-srf_in1k')),
    neck=dict(in_channels=[192, 384, 768]))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))
