# S3-S + UperNet, ADE20K 512x512, 160k: the Swin recipe of upernet_s3-t_8xb2-160k_ade20k-512x512.py with S3-S
# (drop_path 0.3, as Swin-S).
_base_ = './upernet_s3-t_8xb2-160k_ade20k-512x512.py'

model = dict(backbone=dict(arch='small', init_cfg=dict(checkpoint='s3-small_in1k')))
