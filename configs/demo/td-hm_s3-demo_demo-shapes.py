# Demo pose model with a small S3 (`_s3_demo_arch.py`): the HRFormer demo pose model's data and schedule; the
# stride-32 output goes through three 2x deconvolutions to the 16x16 heatmaps (as mmpose's Swin top-down).
_base_ = ['./td-hm_hrformer-demo_demo-shapes.py', './_s3_demo_arch.py']

model = dict(
    backbone=dict(_delete_=True, type='backbones.S3', arch={{_base_.s3_demo_arch}}, out_indices=(3, ),
                  drop_path_rate=0.0, init_cfg=None),
    head=dict(in_channels=256, deconv_out_channels=(64, 64, 64), deconv_kernel_sizes=(4, 4, 4)))
