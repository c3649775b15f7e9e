_base_ = './upernet_twins-pcpvt-s_8xb2-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        type='backbones.PCPVT', arch='large',
        init_cfg=dict(type='Pretrained', checkpoint='twins-pcpvt-large_in1k')),
    decode_head=dict(in_channels=[64, 128, 320, 512]),
    auxiliary_head=dict(in_channels=320))
