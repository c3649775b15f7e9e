# S3-T + Semantic FPN, ADE20K 512x512, 80k iterations, 8 GPUs x 4 images. Swin published no Semantic FPN recipe;
# this is the one of the PVT/Twins papers as mmseg 1.2.2 writes it (twins/twins_pcpvt-s_fpn_fpnhead_8xb4-80k_
# ade20k-512x512.py: AdamW lr 1e-4, weight decay 1e-4, poly decay power 0.9 to 1e-6), with S3-T, drop_path 0.2
# and no weight decay on norms and relative position tables (as the Swin recipes).
_base_ = 'mmseg::twins/twins_pcpvt-s_fpn_fpnhead_8xb4-80k_ade20k-512x512.py'

custom_imports = dict(imports=['backbones'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='backbones.S3',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='s3-tiny_in1k')),
    neck=dict(in_channels=[96, 192, 384, 768], out_channels=256, num_outs=4))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.),
                                    'relative_position_bias_table': dict(decay_mult=0.)}))
param_scheduler = [dict(type='PolyLR', eta_min=1e-6, power=0.9, begin=0, end=80000, by_epoch=False)]
