_base_ = './upernet_twins-pcpvt-s_8xb2-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        type='backbones.SVT', arch='base',
        init_cfg=dict(type='Pretrained', checkpoint='twins-svt-base_in1k')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
