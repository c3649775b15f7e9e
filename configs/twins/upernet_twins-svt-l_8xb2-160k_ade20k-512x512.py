_base_ = './upernet_twins-pcpvt-s_8xb2-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        type='backbones.SVT', arch='large', drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='twins-svt-large_in1k')),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
