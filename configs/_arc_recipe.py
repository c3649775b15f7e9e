# The optimiser part of the ARC recipe, shared by every ARC config (configs/*/arc/*.py, configs/demo/*arc*):
# adapters (shared W per stage / branch and place: `adapter_shared`; per-block s and b: `*_tap.inner`) without
# weight decay (the paper's VTAB recipe) and at 10x the lr of the neck and head (the paper's 1e-2 is for a
# linear head at batch 32; the multiplier is our choice, not a published dense recipe). Use:
# `optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.arc_custom_keys}}))`.
arc_custom_keys = {
    'adapter_shared': dict(lr_mult=10.0, decay_mult=0.0),
    '_tap.inner': dict(lr_mult=10.0, decay_mult=0.0)}
