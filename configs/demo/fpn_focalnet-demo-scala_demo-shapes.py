# Scala demo segmenter: the FocalNet demo segmenter trained once as a slimmable network (widths 0.25-1 in
# steps of 1/16; backbones.slimming). Each iteration trains widths 1, one of 0.625-0.9375, one of
# 0.3125-0.5625 and 0.25, smaller ones distilled (softmax KL) from the next wider one's segmentation
# logits, one optimizer step; the first tenth of the iterations trains width 1 only. Validation reports
# mIoU at widths 0.25 / 0.5 / 0.75 / 1.
_base_ = './fpn_focalnet-demo_demo-shapes.py'

model = dict(type='backbones.ScalaModel', task='EncoderDecoder', warmup_iters=40,
             backbone=dict(slimmable=dict(min_width=0.25, step=1 / 16)))
val_cfg = dict(_delete_=True, type='backbones.ScalaValLoop', widths=[0.25, 0.5, 0.75, 1.0])
