"""Workarounds for the OpenMMLab 2.x stack on current torch / numpy / CPU, applied without patching
installed files (docs/stack.md). Imported by `backbones.registry`; each fix is idempotent.

1. mmpose without torchvision: `mmpose.visualization.simcc_vis` imports torchvision at module level,
   and any mmpose registry lookup imports it. A stand-in module whose `SimCCVisualizer` raises on use
   is installed when torchvision cannot be imported.
2. CPU distributed (torchrun + gloo): mmengine calls `torch.cuda.set_device` unconditionally; on a CPU
   build that is made a no-op. (Configs also set `model_wrapper_cfg.device_ids=None`; tools/train.py
   does it for CPU runs.)
3. SyncBN on CPU DDP cannot run: `revert_sync_batchnorm_for_cpu(model)` turns it into BN.
4. Checkpoints: resume/load of mmengine Runner checkpoints under torch's `weights_only` default is
   handled by `tools/train.py` (trusted local files of the user's own run only).
"""
from __future__ import annotations

import importlib.util
import sys
import types

import torch


def _torchvision_usable() -> bool:
    if importlib.util.find_spec('torchvision') is None:
        return False
    try:
        import torchvision  # noqa: F401
        return True
    except Exception:  # the CUDA wheel beside a CPU torch dies with RuntimeError at import
        return False


def install_mmpose_simcc_stub() -> None:
    name = 'mmpose.visualization.simcc_vis'
    if name in sys.modules or _torchvision_usable():
        return
    stub = types.ModuleType(name)

    class SimCCVisualizer:  # noqa: D401 - stand-in
        """Stand-in: SimCC visualisation needs torchvision, which is not usable here."""

        def __init__(self, *args, **kwargs):
            raise RuntimeError('SimCCVisualizer needs torchvision, which is not installed/usable; '
                               'everything else in mmpose works without it')

    stub.SimCCVisualizer = SimCCVisualizer
    stub.__all__ = ['SimCCVisualizer']
    sys.modules[name] = stub


def make_cuda_set_device_safe() -> None:
    if torch.cuda.is_available() or getattr(torch.cuda.set_device, '_backbones_safe', False):
        return
    original = torch.cuda.set_device

    def set_device(device):  # no GPU: nothing to select (mmengine calls this even for gloo)
        return None

    set_device._backbones_safe = True
    set_device._original = original
    torch.cuda.set_device = set_device


def revert_sync_batchnorm_for_cpu(module: torch.nn.Module) -> torch.nn.Module:
    """Replace every `nn.SyncBatchNorm` by an equivalent `nn.BatchNorm2d` (state kept)."""
    if isinstance(module, torch.nn.SyncBatchNorm):
        bn = torch.nn.BatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                                  module.track_running_stats)
        bn.load_state_dict(module.state_dict())
        bn.train(module.training)
        for p_new, p_old in zip(bn.parameters(), module.parameters()):
            p_new.requires_grad_(p_old.requires_grad)
        return bn
    for name, child in module.named_children():
        new = revert_sync_batchnorm_for_cpu(child)
        if new is not child:
            setattr(module, name, new)
    return module


def apply_all() -> None:
    install_mmpose_simcc_stub()
    make_cuda_set_device_safe()


apply_all()
