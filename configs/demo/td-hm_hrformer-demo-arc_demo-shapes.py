# Demo of ARC adapters (pose): the small HRFormer of `td-hm_hrformer-demo_demo-shapes.py` frozen, ARC adapters
# (bottleneck 8; the paper's dropout 0.1; no weight decay and 3x the head's lr, `_arc_recipe.py`), neck and
# head trained. As written the frozen base is the parent's random initialisation (a run of the mechanics); to
# adapt the plain demo's trained model instead, run `bash tools/demo.sh pose` first and add `--cfg-options
# load_from=work_dirs/demo-pose/iter_300.pth --trust work_dirs/demo-pose`. The run writes adapter files
# (work_dir/adapters_*.pth); evaluate one with `tools/test.py THIS_CONFIG work_dirs/demo-pose/iter_300.pth
# --adapter FILE --trust work_dirs/demo-pose` and fold it into a plain checkpoint of the parent config with
# `backbones merge-adapters THIS_CONFIG FILE --base work_dirs/demo-pose/iter_300.pth --trust
# work_dirs/demo-pose --out merged.pth`.
_base_ = ['./td-hm_hrformer-demo_demo-shapes.py', '../_arc_recipe.py']

model = dict(backbone=dict(adapter=dict(type='ARC', bottleneck=8, dropout=0.1, places=('mixer', 'mlp'))))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.arc_custom_keys}}))
