_base_ = './upernet_twins-pcpvt-s_8xb2-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        type='backbones.SVT', arch='small',
        init_cfg=dict(type='Pretrained', checkpoint='twins-svt-small_in1k')),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
