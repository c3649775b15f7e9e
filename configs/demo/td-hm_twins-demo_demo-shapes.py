# Demo pose model with a small Twins-SVT: the HRFormer demo pose model's data and schedule; the stride-32
# output goes through three 2x deconvolutions to the 16x16 heatmaps (as mmpose's Swin/ResNet top-down).
_base_ = './td-hm_hrformer-demo_demo-shapes.py'

model = dict(
    backbone=dict(_delete_=True, type='backbones.SVT',
                  arch=dict(embed_dims=[32, 64, 128, 256], num_heads=[1, 2, 4, 8], mlp_ratios=[4, 4, 4, 4],
                            depths=[2, 2, 2, 2], sr_ratios=[8, 4, 2, 1], wss=[7, 7, 7, 7]),
                  out_indices=(3, ), init_cfg=None),
    head=dict(in_channels=256, deconv_out_channels=(64, 64, 64), deconv_kernel_sizes=(4, 4, 4)))
