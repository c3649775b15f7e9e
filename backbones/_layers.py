"""Building blocks shared by every family: drop-path, MLP, norms, layout helpers, checkpointing.

Everything here needs PyTorch only.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability `drop_prob` (training only)."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob}'


def drop_path_or_identity(rate: float) -> nn.Module:
    """The official codes use nn.Identity when the rate is 0; so do we (no extra module in the graph)."""
    return DropPath(rate) if rate > 0 else nn.Identity()


def drop_path_schedule(rate: float, depths: Sequence[int]) -> list[list[float]]:
    """Linearly increasing drop-path rates over all blocks, split per stage.

    Matches `torch.linspace(0, rate, sum(depths))` of the official codes.
    """
    rates = torch.linspace(0, rate, sum(depths), device='cpu').tolist()  # also under a meta device context
    out, start = [], 0
    for d in depths:
        out.append(rates[start:start + d])
        start += d
    return out


class Mlp(nn.Module):
    """Linear → activation → dropout → Linear → dropout on (..., C) tensors; keys `fc1`, `fc2`."""

    def __init__(self, in_features: int, hidden_features: Optional[int] = None,
                 out_features: Optional[int] = None, act_layer: Callable[[], nn.Module] = nn.GELU,
                 drop: float = 0.0):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(activate(self.act, self.fc1(x), self.fc1))))


def hooked(*modules: nn.Module) -> bool:
    """Whether a forward hook may see (and keep) an output of these modules or their submodules: the
    in-place and folded fast paths below then step aside, so hooks observe exactly the plain code path."""
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for module in modules for m in module.modules())


def activate(act: nn.Module, x: torch.Tensor, producer: nn.Module) -> torch.Tensor:
    """`act(x)` for `x` freshly computed by `producer`; exact GELU runs in place when no gradient is
    needed and no hook watches `producer` or `act`.

    Same values. On CPU a new activation-sized tensor (≥ 32 MB at dense sizes) is mmap-ed and
    page-faulted on every call; reusing `x` saved ~20 % of Twins-PCPVT-S inference at 512² (2 threads)."""
    if (isinstance(act, nn.GELU) and not (torch.is_grad_enabled() and x.requires_grad)
            and not hooked(producer, act)):
        return torch.ops.aten.gelu_(x, approximate=act.approximate)
    return act(x)


def add_residual(x: torch.Tensor, branch: torch.Tensor, producer: nn.Module) -> torch.Tensor:
    """`x + branch`. Without gradients the sum is written into `branch` (freshly computed by
    `producer`, e.g. a block's attention or MLP) when that changes nothing: same shape, same result
    dtype (under autocast a bf16 branch is not used, the residual stream stays fp32), and no hook
    watching `producer`. See `activate` for why."""
    if ((torch.is_grad_enabled() and (x.requires_grad or branch.requires_grad))
            or branch.shape != x.shape or branch.dtype != torch.result_type(x, branch) or hooked(producer)):
        return x + branch
    return branch.add_(x)


def nlc_to_nchw(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(N, H*W, C) row-major tokens → (N, C, H, W)."""
    n, _, c = x.shape
    return x.transpose(1, 2).reshape(n, c, hw[0], hw[1])


def nchw_to_nlc(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) → (N, H*W, C) row-major tokens."""
    return x.flatten(2).transpose(1, 2)


def pad_to_multiple(x: torch.Tensor, multiple: int | tuple[int, int]) -> torch.Tensor:
    """Zero-pad an NCHW tensor on the right/bottom so H and W become multiples of `multiple`."""
    mh, mw = (multiple, multiple) if isinstance(multiple, int) else multiple
    h, w = x.shape[-2:]
    ph, pw = (-h) % mh, (-w) % mw
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
    return x


def build_norm2d(norm_cfg: Optional[dict], num_features: int) -> nn.Module:
    """BatchNorm from an OpenMMLab-style cfg (`dict(type='BN'|'SyncBN', eps=..., momentum=...)`).

    SyncBN becomes `nn.SyncBatchNorm`; mmengine's Runner reverts it to BN when training is not
    distributed, and `backbones.compat` reverts it for CPU (gloo) DDP, where SyncBN cannot run.
    """
    cfg = dict(norm_cfg or dict(type='BN'))
    kind = cfg.pop('type', 'BN')
    cfg.pop('requires_grad', None)
    if kind in ('BN', 'BN2d', 'BatchNorm', 'BatchNorm2d'):
        return nn.BatchNorm2d(num_features, **cfg)
    if kind in ('SyncBN', 'SyncBatchNorm'):
        return nn.SyncBatchNorm(num_features, **cfg)
    raise ValueError(f"unsupported norm type {kind!r}; expected 'BN' or 'SyncBN'")


def conv_norm(x: torch.Tensor, conv: nn.Conv2d, norm: nn.Module) -> torch.Tensor:
    """`norm(conv(x))`. A BatchNorm in eval mode (running statistics) is folded into the convolution's
    weight and bias, so the activations are read once instead of twice; equal up to float rounding.
    Gradients still reach the conv and BN parameters (frozen-BN fine-tuning, `norm_eval=True`)."""
    if (norm.training or not isinstance(norm, nn.modules.batchnorm._BatchNorm)
            or norm.running_mean is None or not isinstance(conv, nn.Conv2d) or conv.padding_mode != 'zeros'
            or hooked(conv, norm)):
        return norm(conv(x))
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    bias = -norm.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    if norm.bias is not None:
        bias = bias + norm.bias
    weight = conv.weight * scale.reshape(-1, 1, 1, 1).to(conv.weight.dtype)
    return F.conv2d(x, weight, bias.to(conv.weight.dtype), conv.stride, conv.padding, conv.dilation, conv.groups)


class ConvNormSequential(nn.Sequential):
    """`nn.Sequential` (same children, same state-dict keys) whose Conv2d → BatchNorm pairs run through
    `conv_norm` (BN folded into the convolution in eval mode)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        modules = list(self)
        i = 0
        while i < len(modules):
            module = modules[i]
            if (isinstance(module, nn.Conv2d) and i + 1 < len(modules)
                    and isinstance(modules[i + 1], nn.modules.batchnorm._BatchNorm)):
                x = conv_norm(x, module, modules[i + 1])
                i += 2
            else:
                x = module(x)
                i += 1
        return x


def run_maybe_checkpointed(fn: Callable, *args, enabled: bool):
    """Run `fn(*args)`, with non-reentrant activation checkpointing when `enabled` and autograd is on."""
    if enabled and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)
