# HRFormer-B, COCO 384x288: official hrt_base_coco_384x288.py uses drop path 0.3 (mmpose 1.x: 0.2).
_base_ = './td-hm_hrformer-s_8xb32-210e_coco-384x288.py'

model = dict(
    backbone=dict(arch='base', drop_path_rate=0.3,
                  init_cfg=dict(type='Pretrained', checkpoint='hrformer-base_in1k')),
    head=dict(in_channels=78))
