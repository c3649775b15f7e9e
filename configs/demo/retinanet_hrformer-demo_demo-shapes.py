# Demo detector with a small HRFormer (all four branches out, strides 4-32; classification/segmentation
# switches: relative position bias, nearest fusion): the FocalNet demo detector's recipe, backbone swapped.
_base_ = ['./retinanet_focalnet-demo_demo-shapes.py', './_hrformer_demo_arch.py']

model = dict(
    backbone=dict(_delete_=True, type='backbones.HRFormer', arch={{_base_.hrformer_demo_arch}},
                  out_indices=(0, 1, 2, 3), norm_cfg=dict(type='BN'), init_cfg=None),
    neck=dict(in_channels={{_base_.hrformer_demo_channels}}))
