# HRFormer-S top-down heatmap pose estimation, COCO 256x192: the official recipe (HRNet/HRFormer
# pose/configs/top_down/hrt/coco/hrt_small_coco_256x192.py): 210 epochs, AdamW lr 5e-4, weight decay
# 0.01 (none on relative position tables), steps at 170/200, drop path 0.1, SyncBN, highest-resolution
# output only. Codec, pipelines, head and data come from mmpose's own HRFormer config.
_base_ = 'mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_hrformer-small_8xb32-210e_coco-256x192.py'

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
