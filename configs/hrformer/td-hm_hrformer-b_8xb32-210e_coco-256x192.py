# HRFormer-B, COCO 256x192: the HRFormer-S recipe with the base backbone and drop path 0.2
# (official hrt_base_coco_256x192.py).
_base_ = './td-hm_hrformer-s_8xb32-210e_coco-256x192.py'

model = dict(
    backbone=dict(arch='base', drop_path_rate=0.2,
                  init_cfg=dict(type='Pretrained', checkpoint='hrformer-base_in1k')),
    head=dict(in_channels=78))
