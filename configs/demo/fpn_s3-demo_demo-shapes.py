# Demo segmenter with a small S3 (`_s3_demo_arch.py`): the Twins demo segmenter's data, Semantic FPN head and
# schedule with the backbone swapped.
_base_ = ['./fpn_twins-demo_demo-shapes.py', './_s3_demo_arch.py']

model = dict(
    backbone=dict(_delete_=True, type='backbones.S3', arch={{_base_.s3_demo_arch}}, drop_path_rate=0.0,
                  init_cfg=None),
    neck=dict(in_channels={{_base_.s3_demo_channels}}))
