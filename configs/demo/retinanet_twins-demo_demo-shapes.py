# Demo detector with a small Twins-PCPVT (global sub-sampled attention, PEG): the FocalNet demo detector's
# data, head and schedule with the backbone swapped.
_base_ = './retinanet_focalnet-demo_demo-shapes.py'

model = dict(
    backbone=dict(_delete_=True, type='backbones.PCPVT',
                  arch=dict(embed_dims=[32, 64, 128, 256], num_heads=[1, 2, 4, 8], mlp_ratios=[4, 4, 4, 4],
                            depths=[1, 1, 2, 1], sr_ratios=[8, 4, 2, 1]),
                  init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 256]))
