# HRFormer-S top-down heatmap pose estimation, COCO 384x288 (heatmaps 72x96, sigma 3): the official
# recipe (hrt_small_coco_384x288.py), the same as 256x192 apart from the input and codec.
_base_ = 'mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_hrformer-small_8xb32-210e_coco-384x288.py'

custom_imports = dict(imports=['backbones'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='backbones.HRFormer',
        arch='small',
        out_indices=(0, ),             # official pose: stage4 multiscale_output=False
        drop_path_rate=0.1,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        # the official pose code: no relative position bias, bilinear fusion upsampling
        with_rpe=False,
        fuse_upsample='bilinear',
        init_cfg=dict(type='Pretrained', checkpoint='hrformer-small_in1k')),
    head=dict(in_channels=32))

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=5e-4, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'relative_position_bias_table': dict(decay_mult=0.)}))
