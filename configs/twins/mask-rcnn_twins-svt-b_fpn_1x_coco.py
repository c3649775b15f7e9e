_base_ = './mask-rcnn_twins-pcpvt-s_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        type='backbones.SVT', arch='base',
        init_cfg=dict(type='Pretrained', checkpoint='twins-svt-base_in1k')),
    neck=dict(in_channels=[96, 192, 384, 768]))
