_base_ = './mask-rcnn_twins-pcpvt-s_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        type='backbones.SVT', arch='large',
        init_cfg=dict(type='Pretrained', checkpoint='twins-svt-large_in1k')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
