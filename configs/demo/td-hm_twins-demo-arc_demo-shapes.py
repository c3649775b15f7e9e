# Demo of ARC adapters (pose): the small Twins-SVT of `td-hm_twins-demo_demo-shapes.py` frozen, ARC adapters
# (bottleneck 8; the paper's dropout 0.1; no weight decay and 3x the head's lr, `_arc_recipe.py`), head
# trained. As written the frozen base is the parent's random initialisation (a run of the mechanics); to adapt
# a trained model of the parent config instead, add `--cfg-options load_from=PARENT_RUN/iter_300.pth --trust
# PARENT_RUN` (`tools/transfer_experiment.py` does so on the shifted demo task). The run writes adapter files
# (work_dir/adapters_*.pth); evaluate one with `tools/test.py THIS_CONFIG PARENT_RUN/iter_300.pth --adapter FILE
# --trust PARENT_RUN`, fold it into a plain checkpoint with `backbones merge-adapters`.
_base_ = ['./td-hm_twins-demo_demo-shapes.py', '../_arc_recipe.py']

model = dict(backbone=dict(adapter=dict(type='ARC', bottleneck=8, dropout=0.1, places=('mixer', 'mlp'))))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.arc_custom_keys}}))
