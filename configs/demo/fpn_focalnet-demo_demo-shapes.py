# Demo segmenter with a small FocalNet: the Twins demo segmenter's data, Semantic FPN head and schedule with
# the backbone swapped.
_base_ = './fpn_twins-demo_demo-shapes.py'

model = dict(
    backbone=dict(_delete_=True, type='backbones.FocalNet',
                  arch=dict(embed_dim=32, depths=[1, 1, 2, 1], focal_levels=[2, 2, 2, 2],
                            focal_windows=[3, 3, 3, 3]),
                  drop_path_rate=0.0, init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 256]))
