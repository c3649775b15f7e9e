"""Semantic FPN + Twins-PCPVT-S, ADE20K 512x512, 80k iterations, 8 GPUs x 4 images: the official recipe
(fpn_pcpvt_s_512x512_80k_ade20k.py): AdamW lr 1e-4, weight decay 1e-4, poly decay (power 0.9, min lr 1e-6);
the dense backbones use drop path 0.2."""
_base_ = 'mmseg::twins/twins_pcpvt-s_fpn_fpnhead_8xb4-80k_ade20k-512x512.py'
custom_imports = dict(imports=['backbones'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True, type='backbones.PCPVT', arch='small', out_indices=(0, 1, 2, 3), drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='twins-pcpvt-small_in1k')),
    neck=dict(in_channels=[64, 128, 320, 512], out_channels=256, num_outs=4))

optim_wrapper = dict(_delete_=True, type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4))
param_scheduler = [dict(type='PolyLR', eta_min=1e-6, power=0.9, begin=0, end=80000, by_epoch=False)]
