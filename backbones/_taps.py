"""Taps: the insertion points through which family-agnostic mechanisms (ARC adapters, ...) plug into
every family's blocks, without code of their own per family.

A transformer block of any family owns two taps:
    `mixer_tap` — on the normalised input of its token mixer (attention / focal modulation),
    `mlp_tap`   — on the normalised input of its MLP / ConvFFN.
A tap sees a channels-last tensor (..., C) and is the identity (no parameters, no state-dict keys) until a
mechanism installs a module in it with `tap.install(module)`. Where a mixer pads its input, its tap sits
after the padding, so that whatever is installed sees exactly the tokens the following layers see.

A block also declares, per tap, the layers that consume the tap's output first (`tap_consumers()`:
tap name → attribute paths relative to the block, e.g. {'mixer_tap': ['attn.qkv'], 'mlp_tap':
['mlp.fc1']}), so that a linear mechanism can be folded into them exactly, and the backbone says which
blocks share per-width parameters (`DenseBackbone.tap_groups()`).

Recomputation (`tap.recompute`, set by mechanisms that freeze the backbone, e.g. adapters), in training
with gradients: 'module' recomputes what the tap installs in backward instead of storing its
intermediates; 'branch' recomputes the whole branch the tap feeds — a block runs each branch through its
tap (`tap.feed(consumer, x, norm)` for norm → tap → consumer, `tap.branch(fn, x)` where the tap sits deeper
inside `fn`, e.g. after a mixer's padding), so that only the branch input x is stored (non-reentrant
checkpoint, which stops recomputing once the tensors backward needs exist again; dropout masks replay the
same random state). A frozen backbone's layers store nothing for weight gradients, so the MLP's 4·C-wide
hidden activation is most of what its branch keeps (recomputing it costs one fc1), and the attention
scores most of what a window-attention branch keeps (recomputing them costs the branch's forward again).
"""
from __future__ import annotations

from typing import Callable, Iterator, Optional

import torch
from torch import nn

from ._layers import checkpointed

TAP_NAMES = ('mixer_tap', 'mlp_tap')


class Tap(nn.Module):
    """Identity until `install(module)`; then `module(x)`. (..., C) → (..., C).

    `recompute`: False, 'module' or 'branch' (module docstring)."""

    def __init__(self):
        super().__init__()
        self.inner: Optional[nn.Module] = None
        self.recompute: 'bool | str' = False

    def install(self, module: Optional[nn.Module]) -> None:
        self.inner = module

    def _recomputing(self, level: str) -> bool:
        return self.recompute == level and self.training and torch.is_grad_enabled()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inner is None:
            return x
        if self._recomputing('module'):
            return checkpointed(self.inner, x)
        return self.inner(x)

    def branch(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """`fn(x)`, the branch this tap sits in (`fn` calls the tap); recomputed in backward under 'branch'."""
        if self._recomputing('branch'):
            return checkpointed(fn, x)
        return fn(x)

    def feed(self, consumer: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
             norm: Optional[nn.Module] = None) -> torch.Tensor:
        """`consumer(self(norm(x)))`: the branch this tap feeds (norm optional), see `branch`."""
        return self.branch(lambda t: consumer(self(t if norm is None else norm(t))), x)


def tapped_blocks(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(qualified name, block) of every module that owns taps, in module order."""
    for name, module in model.named_modules():
        if all(isinstance(getattr(module, t, None), Tap) for t in TAP_NAMES):
            yield name, module


def tap_consumer_modules(block: nn.Module, tap_name: str) -> list[tuple[str, nn.Module]]:
    """(path relative to the block, module) of each first consumer of `block.<tap_name>`."""
    return [(path, block.get_submodule(path)) for path in block.tap_consumers()[tap_name]]


def tap_width(block: nn.Module, tap_name: str) -> int:
    """Channels C the tap sees: the input width of its first consumer."""
    _, consumer = tap_consumer_modules(block, tap_name)[0]
    return consumer.in_features if isinstance(consumer, nn.Linear) else consumer.in_channels


def tap_groups(model: nn.Module) -> dict[str, list[str]]:
    """Blocks that share per-width parameters: group name → qualified block names, in module order.

    A model may define `tap_groups()` itself; the default groups the tapped blocks by stage (the
    backbone's `stage_modules(i)`, stage -1 .. NUM_STAGES - 1) and, within a stage, by width — so one
    group per stage, and per branch where a stage runs branches of different widths (HRFormer).
    Group names are `stage{i}_{width}` ('blocks_{width}' for blocks outside every stage).
    """
    if hasattr(model, 'tap_groups'):
        return model.tap_groups()
    stage_of: dict[int, int] = {}
    for stage in range(-1, getattr(model, 'NUM_STAGES', 0)):
        try:
            modules = model.stage_modules(stage)
        except (NotImplementedError, IndexError, AttributeError):
            continue
        for module in modules:
            if module is None:
                continue
            for sub in module.modules():
                stage_of.setdefault(id(sub), stage)
    groups: dict[str, list[str]] = {}
    for name, block in tapped_blocks(model):
        stage = stage_of.get(id(block))
        width = tap_width(block, TAP_NAMES[0])
        key = f'blocks_{width}' if stage is None else f'stage{stage}_{width}'
        groups.setdefault(key, []).append(name)
    return groups
