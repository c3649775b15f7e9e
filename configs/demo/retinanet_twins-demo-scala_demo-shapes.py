# Scala demo detector: the Twins-PCPVT demo detector trained once as a slimmable network (widths 0.25-1 in
# steps of 1/16; backbones.slimming). Each iteration trains widths 1, one of 0.625-0.9375, one of
# 0.3125-0.5625 and 0.25, smaller ones distilled from the next wider one's class logits, one optimizer
# step; the first tenth of the iterations trains width 1 only (as Scala's warm-up). Validation reports
# bbox mAP at widths 0.25 / 0.5 / 0.75 / 1. Export a width: `backbones export-width THIS_CONFIG CKPT
# --width 0.5 --out DIR --trust`.
_base_ = './retinanet_twins-demo_demo-shapes.py'

model = dict(type='backbones.ScalaModel', task='RetinaNet', warmup_iters=50,
             backbone=dict(slimmable=dict(min_width=0.25, step=1 / 16)))
val_cfg = dict(_delete_=True, type='backbones.ScalaValLoop', widths=[0.25, 0.5, 0.75, 1.0])
