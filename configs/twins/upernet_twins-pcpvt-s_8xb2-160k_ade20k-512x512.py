"""UperNet + Twins-PCPVT-S, ADE20K 512x512, 160k iterations, 8 GPUs x 2 images: the official recipe
(upernet_pcpvt_s_512x512_160k_ade20k_swin_setting.py): AdamW lr 6e-5, betas (0.9, 0.999), weight decay 0.01
except PEG (pos_block) and norms, 1500-iteration linear warm-up from 1e-6, then poly decay (power 1.0) to 0;
the dense backbones use drop path 0.2."""
_base_ = 'mmseg::twins/twins_pcpvt-s_uperhead_8xb4-160k_ade20k-512x512.py'
custom_imports = dict(imports=['backbones'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True, type='backbones.PCPVT', arch='small', out_indices=(0, 1, 2, 3), drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='twins-pcpvt-small_in1k')),
    decode_head=dict(in_channels=[64, 128, 320, 512]),
    auxiliary_head=dict(in_channels=320))

train_dataloader = dict(batch_size=2)
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'pos_block': dict(decay_mult=0.0), 'norm': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
