# Demo pose model with a small FocalNet: the HRFormer demo pose model's data and schedule; the stride-32
# output goes through three 2x deconvolutions to the 16x16 heatmaps (as mmpose's Swin/ResNet top-down).
_base_ = './td-hm_hrformer-demo_demo-shapes.py'

model = dict(
    backbone=dict(_delete_=True, type='backbones.FocalNet',
                  arch=dict(embed_dim=32, depths=[1, 1, 2, 1], focal_levels=[2, 2, 2, 2],
                            focal_windows=[3, 3, 3, 3]),
                  out_indices=(3, ), drop_path_rate=0.0, init_cfg=None),
    head=dict(in_channels=256, deconv_out_channels=(64, 64, 64), deconv_kernel_sizes=(4, 4, 4)))
