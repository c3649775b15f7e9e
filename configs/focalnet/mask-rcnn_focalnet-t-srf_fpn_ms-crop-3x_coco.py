# FocalNet-T (SRF) + Mask R-CNN, 3x (36 epochs, steps at 27 and 33); drop_path 0.3.
# Official: mask_rcnn_focalnet_tiny_patch4_mstrain_480-800_adamw_3x_coco_srf.py. Published: box AP 47.6,
# mask AP 42.6.
_base_ = './mask-rcnn_focalnet-t-srf_fpn_1x_coco.py'

model = dict(backbone=dict(drop_path_rate=0.3))

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33], gamma=0.1),
]
