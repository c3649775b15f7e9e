_base_ = './mask-rcnn_twins-pcpvt-s_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        type='backbones.SVT', arch='small',
        init_cfg=dict(type='Pretrained', checkpoint='twins-svt-small_in1k')),
    neck=dict(in_channels=[64, 128, 256, 512]))
