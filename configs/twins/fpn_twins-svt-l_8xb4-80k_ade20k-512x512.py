_base_ = './fpn_twins-pcpvt-s_8xb4-80k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        type='backbones.SVT', arch='large', drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='twins-svt-large_in1k')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
