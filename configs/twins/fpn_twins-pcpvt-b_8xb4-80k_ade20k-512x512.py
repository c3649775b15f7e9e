_base_ = './fpn_twins-pcpvt-s_8xb4-80k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        type='backbones.PCPVT', arch='base',
        init_cfg=dict(type='Pretrained', checkpoint='twins-pcpvt-base_in1k')),
    neck=dict(in_channels=[64, 128, 320, 512]))
