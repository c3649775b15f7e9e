# FocalNet-T (SRF) top-down heatmap pose estimation, COCO 256x192, 210 epochs. NOT an official FocalNet recipe:
# mmpose's Swin-T top-down base (last stage only, deconvolution heatmap head, Adam lr 5e-4, steps at 170 and
# 200) with the ImageNet FocalNet-T (SRF) backbone unchanged (focal windows 3).
_base_ = 'mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_swin-t-p4-w7_8xb32-210e_coco-256x192.py'

custom_imports = dict(imports=['backbones'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='backbones.FocalNet',
        arch='tiny-srf',
        out_indices=(3, ),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='focalnet-tiny-srf_in1k')),
    head=dict(in_channels=768))
