"""Top-down heatmap pose estimation, COCO 256x192, SVT-S (stride-32 output, 512 channels) with the
deconvolution HeatmapHead, on mmpose's Swin-T recipe (Adam lr 5e-4, 210 epochs, 8 GPUs x 32). Twins publishes
no pose recipe; drop path 0.2 as its dense backbones."""
_base_ = 'mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_swin-t-p4-w7_8xb32-210e_coco-256x192.py'
custom_imports = dict(imports=['backbones'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True, type='backbones.SVT', arch='small', out_indices=(3, ), drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='twins-svt-small_in1k')),
    head=dict(in_channels=512))
