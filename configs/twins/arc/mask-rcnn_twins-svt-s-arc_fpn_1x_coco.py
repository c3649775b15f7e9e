# ARC adapters (Adapter Re-Composing, arXiv 2310.06234) on a frozen Twins-SVT-S for Mask R-CNN: the backbone's
# own weights and BatchNorm stay frozen (`adapter=` sets that up), the adapters (W per stage and place; s, b
# per block), the neck and the head train. Paper defaults: bottleneck r = 50, adapter dropout 0.1, no weight
# decay on adapters. The adapters' lr is 3x the head's (the paper's 1e-2 is for a linear head at batch 32;
# the multiplier is our choice, not a published dense recipe). Training writes adapter files
# (work_dir/adapters_*.pth, base name + sha256); evaluate: tools/test.py THIS_CONFIG --adapter FILE; deploy:
# backbones merge-adapters THIS_CONFIG FILE --out merged.pth (a plain checkpoint of the parent config).
_base_ = ['../mask-rcnn_twins-svt-s_fpn_1x_coco.py', '../../_arc_recipe.py']

model = dict(backbone=dict(adapter=dict(type='ARC', bottleneck=50, dropout=0.1, places=('mixer', 'mlp'))))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.arc_custom_keys}}))
