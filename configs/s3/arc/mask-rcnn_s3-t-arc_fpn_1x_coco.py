# ARC adapters (Adapter Re-Composing, arXiv 2310.06234) on a frozen S3-T for Mask R-CNN: the backbone's own
# weights stay frozen (`adapter=` sets that up; BatchNorm, where any, in eval), the adapters (W per stage and
# place; s, b per block), the neck and the head train. Paper defaults: bottleneck r = 50, adapter dropout 0.1;
# no weight decay on adapters and 3x the head's lr (`../../_arc_recipe.py`). Training writes adapter files
# (work_dir/adapters_*.pth, base name + sha256); evaluate: tools/test.py THIS_CONFIG --adapter FILE; deploy:
# backbones merge-adapters THIS_CONFIG FILE --out merged.pth (a plain checkpoint of the parent config).
_base_ = ['../mask-rcnn_s3-t_fpn_1x_coco.py', '../../_arc_recipe.py']

model = dict(backbone=dict(adapter=dict(type='ARC', bottleneck=50, dropout=0.1, places=('mixer', 'mlp'))))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.arc_custom_keys}}))
