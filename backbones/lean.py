"""Lean inference (`lean=True` on every constructor and `create_backbone`): exact, lower peak memory.

What it does today: the token-wise MLP of every `Mlp` (FocalNet, Twins PCPVT/SVT, S3) runs in
inference over bounded chunks of tokens (MCUFormer's bounded token-wise operators): the hidden
activation (tokens × hidden, the largest tensor of these models at dense sizes) never exists whole,
each chunk's result is written into one preallocated output. Rows of a linear layer do not interact,
so the outputs equal the default path's up to float rounding of the GEMM blocking (tests: ≤ 1e-5
relative). Training, autograd, compilation, tracing and export take the default path. HRFormer's
convolutional FFN is not chunked (no saving there yet).

    create_backbone('twins-pcpvt-small', lean=True)                  # 8 MiB hidden chunks
    PCPVT(arch='small', lean=dict(chunk_bytes=2 << 20))
"""
from __future__ import annotations

import types
from typing import Any

import torch
from torch import nn

from ._base import DenseBackbone, register_mechanism
from ._layers import Mlp, plain_eager

DEFAULT_CHUNK_BYTES = 8 << 20


def parse_lean(cfg: Any) -> dict:
    """`lean=` value → dict(chunk_bytes=int). True, or dict(chunk_bytes=N) with N ≥ 1."""
    if cfg is True:
        return dict(chunk_bytes=DEFAULT_CHUNK_BYTES)
    if cfg is False:
        return {}
    if isinstance(cfg, dict) and set(cfg) <= {'chunk_bytes'}:
        chunk = cfg.get('chunk_bytes', DEFAULT_CHUNK_BYTES)
        if isinstance(chunk, int) and not isinstance(chunk, bool) and chunk >= 1:
            return dict(chunk_bytes=chunk)
    raise ValueError(f"lean: expected True, False or dict(chunk_bytes=N >= 1), got {cfg!r}")


def _lean_mlp_forward(self: Mlp, x: torch.Tensor) -> torch.Tensor:
    """`Mlp.forward` over chunks of tokens in inference, each chunk's output written in place."""
    hidden_bytes = self.fc1.out_features * x.element_size()
    rows = max(1, self.lean_chunk_bytes // hidden_bytes)
    tokens = x.numel() // max(x.shape[-1], 1)
    if torch.is_grad_enabled() or not plain_eager() or tokens <= rows:
        return type(self).forward(self, x)
    flat = x.reshape(tokens, x.shape[-1])
    out = None
    for start in range(0, tokens, rows):
        part = self._forward(flat[start:start + rows])
        if out is None:
            out = part.new_empty(tokens, part.shape[-1])
        out[start:start + part.shape[0]] = part
        del part
    return out.view(*x.shape[:-1], out.shape[-1])


@register_mechanism('lean', order=90)
def apply_lean(model: DenseBackbone, cfg: Any) -> None:
    """Switch every `Mlp` of `model` to chunked inference; records `model.lean_cfg`."""
    spec = parse_lean(cfg)
    model.lean_cfg = spec
    if not spec:
        return
    for module in model.modules():
        if isinstance(module, Mlp):
            module.lean_chunk_bytes = spec['chunk_bytes']
            module.forward = types.MethodType(_lean_mlp_forward, module)


def lean_modules(model: nn.Module) -> int:
    """How many modules run lean."""
    return sum(1 for m in model.modules() if getattr(m, 'lean_chunk_bytes', None))
