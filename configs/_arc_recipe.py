# The optimiser part of the ARC recipe, shared by every ARC config (configs/*/arc/*.py, configs/demo/*arc*):
# adapters (shared W per stage / branch and place: `adapter_shared`; per-block s and b: `*_tap.inner`) without
# weight decay (the paper's VTAB recipe) and at 3x the lr of the neck and head (the paper's 1e-2 is for a
# linear head at batch 32; the multiplier is our choice, not a published dense recipe: on the demo transfer task
# at 0.3 of the schedule (tools/transfer_experiment.py --scale 0.3, 2026-12-06) 3x gave det bbox mAP 0.744 / seg
# mIoU 84.33 / pose AP 0.811 where 10x gave 0.688 / 82.62 / 0.811 and 1x 0.687 / 84.21 on the same bases; the
# full schedule with 3x: benchmarks/transfer_experiment.md). Use:
# `optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.arc_custom_keys}}))`.
arc_custom_keys = {
    'adapter_shared': dict(lr_mult=3.0, decay_mult=0.0),
    '_tap.inner': dict(lr_mult=3.0, decay_mult=0.0)}
