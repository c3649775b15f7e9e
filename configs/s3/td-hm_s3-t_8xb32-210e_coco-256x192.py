# S3-T top-down heatmap pose estimation, COCO 256x192, 210 epochs: mmpose 1.3.2's Swin-T top-down recipe
# (body_2d_keypoint/topdown_heatmap/coco/td-hm_swin-t-p4-w7_8xb32-210e_coco-256x192.py: last stage only,
# deconvolution heatmap head, Adam lr 5e-4, steps at 170 and 200) with S3-T, drop_path 0.2.
_base_ = 'mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_swin-t-p4-w7_8xb32-210e_coco-256x192.py'

custom_imports = dict(imports=['backbones'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='backbones.S3',
        arch='tiny',
        out_indices=(3, ),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='s3-tiny_in1k')),
    head=dict(in_channels=768))
