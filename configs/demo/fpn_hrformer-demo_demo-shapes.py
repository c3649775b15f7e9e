# Demo segmenter with a small HRFormer (four branches into Semantic FPN): the Twins demo segmenter's data,
# head and schedule with the backbone swapped.
_base_ = ['./fpn_twins-demo_demo-shapes.py', './_hrformer_demo_arch.py']

model = dict(
    backbone=dict(_delete_=True, type='backbones.HRFormer', arch={{_base_.hrformer_demo_arch}},
                  out_indices=(0, 1, 2, 3), norm_cfg=dict(type='BN'), init_cfg=None),
    neck=dict(in_channels={{_base_.hrformer_demo_channels}}))
