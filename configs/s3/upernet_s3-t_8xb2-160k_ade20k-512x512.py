# S3-T + UperNet, ADE20K 512x512, 160k iterations, 8 GPUs x 2 images: the Swin-T recipe of mmseg 1.2.2
# (swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py: AdamW lr 6e-5, weight decay
# 0.01, no decay on norms and relative position tables, 1500-iteration warm-up then poly) with S3-T,
# drop_path 0.3.
_base_ = 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'

custom_imports = dict(imports=['backbones'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='backbones.S3',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='s3-tiny_in1k')),
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150))
