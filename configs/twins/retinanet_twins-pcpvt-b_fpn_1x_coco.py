_base_ = './retinanet_twins-pcpvt-s_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        type='backbones.PCPVT', arch='base',
        init_cfg=dict(type='Pretrained', checkpoint='twins-pcpvt-base_in1k')),
    neck=dict(in_channels=[64, 128, 320, 512]))
