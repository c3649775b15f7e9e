_base_ = './fpn_twins-pcpvt-s_8xb4-80k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        type='backbones.SVT', arch='base',
        init_cfg=dict(type='Pretrained', checkpoint='twins-svt-base_in1k')),
    neck=dict(in_channels=[96, 192, 384, 768]))
