"""Slimmable backbones (Scala: "Slicing Vision Transformer for Flexible Inference", Zhang et al.,
NeurIPS 2024, arXiv 2412.04786; facts from ../shared/research/seed_papers_2.md §2, no code copied).

One family-agnostic mechanism. A backbone built with `slimmable=dict(...)` runs at any trained width
ratio r (`set_width(model, r)`, `with at_width(model, r): ...`): every channel count C of a stage
becomes c = round(r·C) (a multiple of the stage's head count), depth and head counts stay (the head
dim shrinks, the softmax scale stays the full width's). Isolated Activation: the smallest trained
width and r = 1 use the FIRST c channels of every weight, every intermediate width the LAST c.
Outputs keep the full channel count (inactive channels are zero), so stock necks and heads work.
BatchNorm layers keep separate running statistics per trained width (`slim_running_*` buffers).
At r = 1 nothing is touched: the model is exactly the ordinary backbone and loads its checkpoints.

`export_width(model, r)` builds a natively narrow backbone of the same class (smaller arch, the
sliced weights, per-width BN statistics) whose outputs are the slimmed model's without the zero
channels; `pad_to_full(outputs, channel_map)` puts them back.

Families contribute data only: `slimming_spec()` returns
    groups:  name → dict(channels=C, multiple=m, arch=[path, ...],   a free channel count, written at
                         kwargs=[name, ...])                         those arch paths / constructor
                                                                     arguments on export;
                    dict(of=g, factor=f)                             c = int(c_g · f) (MLP hidden, ...);
                    dict(of=g, heads=h)                              c = c_g, chosen per head (the h
                                                                     blocks of C/h keep c/h each).
    tensors: path → layout. A module path covers its weight (dims in order), bias (dim 0), and for
             norms weight/bias/running statistics (dim 0); a parameter path covers that tensor. Per
             dim: None (kept), a group name, or a list of group names and fixed lengths (a fused
             projection, e.g. ['s0.h', 's0.h', 's0.h'] for q, k, v).
    scales:  attention module path → its per-head group; the module's `scale` attribute (None:
             1/sqrt(head dim)) is the full width's head_dim ** -0.5 while slimmed.
    scale_key: where an export writes that scale: ('arch', key) or ('kwargs', key).
    head_dim_key: where an export writes the narrow head dim, for a family whose head dim is an
             argument of its own (S3) rather than width / heads.
    outputs: one group per forward output.
Depth-wise convolutions (groups = channels) and LayerNorm shapes follow their sliced weights.

Low-rank layers (`lowrank=`, MCUFormer, `backbones.lowrank`) compose with this mechanism: they are built
first, and a LowRankLinear / LowRankConv1x1 at a declared module path is sliced where the dense layer would
be (input channels → columns of `first`, output channels → rows of `last` and the bias, the same Isolated
Activation side). The rank is one more dimension of a sub-network: `set_width(model, width, depths,
ranks=[ρ per stage])` (None: the ratios the model was built with). Each low-rank layer then keeps its FIRST
k components (rows of `first`, the k×k top-left block of `middle`, columns of `last`; the SVD
initialisation orders them by singular value), k = lowrank.rank_for(ρ of its stage, active in, active
out): the rank a natively narrow model built with `lowrank=dict(ratio=ρ)` gives that layer, so the export
(`lowrank=dict(ratio=[...])` in its arguments and config) is exact at every width and depth too. A ρ whose
k exceeds a layer's built rank is refused (not clamped); ratios up to the built ones always fit. Below
width 1 every low-rank layer follows this rule, with the built ratios when no `ranks` is given.

Deviation from the DeiT code of Scala: a fused q/k/v weight is sliced per projection and per head
(q, k and v each keep c rows, c/heads per head), the layout of a natively narrow model; the DeiT code
takes 3c contiguous rows, which only matters for its released DeiT weights.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import math
import random
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._base import DenseBackbone, invalid_argument, register_mechanism
from .lowrank import LowRankLinear, rank_for

__all__ = ['NotExportableError', 'set_width', 'get_width', 'get_depths', 'get_ranks', 'rank_ratios',
           'rank_choices', 'width_groups', 'depth_stages', 'at_width', 'trained_widths', 'export_width', 'export_model', 'channel_map',
           'pad_to_full', 'scala_widths', 'is_slimmable', 'distillation_loss', 'SLIMMABLE_DEFAULTS']

SLIMMABLE_DEFAULTS: dict[str, Any] = dict(min_width=0.25, step=1 / 16, widths=None, off_grid=False)
"""`slimmable=dict(...)` keys. The trained grid is min_width, min_width + step, ..., 1.0 (Scala's
X = 13 widths by default) unless `widths` lists it. `off_grid=True` also accepts widths between the
grid points at run time (not for models with BatchNorm: their statistics exist per trained width)."""

_EPS = 1e-9
_BN_STATS = ('running_mean', 'running_var')
_BN_AFFINE = ('weight', 'bias')
Range = tuple[int, int]


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


# ---------------------------------------------------------------------------------------------------
# the compiled declaration
# ---------------------------------------------------------------------------------------------------
@dataclass
class _Group:
    name: str
    channels: int                      # full width
    multiple: int = 1
    of: Optional[str] = None
    factor: float = 1.0
    heads: int = 0                     # > 0: selection per head
    arch: list = field(default_factory=list)
    kwargs: list = field(default_factory=list)


@dataclass(frozen=True)
class _RankSeg:
    """The rank dim of one low-rank layer (a dim-layout segment): its first k of `rank` components are kept,
    k = rank_for(ρ of `stage`, active in, active out); a None layout is an unsliced dim of that size."""
    path: str
    stage: int
    rank: int
    in_features: int
    out_features: int
    in_layout: Optional[tuple]
    out_layout: Optional[tuple]


@dataclass
class _Entry:
    """One module the mechanism slices: its own tensors, attributes and per-width BN statistics."""
    path: str
    module: nn.Module
    tensors: list                      # (name, layout) with layout a tuple per dim
    norm_shape: Optional[tuple] = None     # LayerNorm: layout of normalized_shape
    groups: Optional[tuple] = None         # depth-wise conv: layout of dim 0 → `groups`
    bn: Optional[tuple] = None             # BatchNorm: layout of its statistics
    scale: Optional[float] = None          # attention: full-width softmax scale
    lowrank: bool = False                  # a low-rank layer (its rank is sliced too)
    stack: list = field(default_factory=list)


class _Width:
    """An active sub-network: a width ratio per free group (uniform or per stage / branch), the channel
    counts that follow, the Isolated Activation side and BN statistics row per group, the depth kept
    per depth stage (None: every block) and the rank ratio per stage of the low-rank layers (None: the
    built ones)."""

    def __init__(self, plan: '_Plan', ratio: 'float | dict[str, float]', depths: Optional[tuple] = None,
                 ranks: Optional[tuple] = None):
        free = [g.name for g in plan.groups.values() if g.of is None]
        ratios = {name: float(ratio) for name in free} if not isinstance(ratio, dict) else dict(ratio)
        uniform = len(set(ratios.values())) == 1
        self.ratio: 'float | dict[str, float]' = (next(iter(ratios.values())) if uniform else
                                                  {k: v for k, v in ratios.items() if k in plan.free})
        self.depths = None if depths is None or all(d is None or d == full for d, full in
                                                    zip(depths, plan.full_depths)) else tuple(depths)
        self.ranks = None if ranks is None or tuple(ranks) == tuple(plan.rank_ratios) else tuple(ranks)
        self.full = uniform and self.ratio == 1.0 and self.depths is None and self.ranks is None
        self.counts: dict[str, int] = {}
        self.front: dict[str, bool] = {}
        self.rows: dict[str, Optional[int]] = {}
        roots: dict[str, str] = {}          # group → the free group it derives from
        for g in plan.groups.values():      # declaration order: `of` groups come after their source
            root = roots[g.name] = g.name if g.of is None else roots[g.of]
            r = ratios[root]
            self.front[g.name] = r == 1.0 or abs(r - plan.widths[0]) < _EPS
            self.rows[g.name] = plan.bn_rows.get(r)
            if g.of is None:
                units = g.channels // g.multiple
                self.counts[g.name] = g.multiple * min(units, max(1, _round_half_up(r * units)))
            elif g.heads:
                self.counts[g.name] = self.counts[g.of]
            else:
                self.counts[g.name] = int(self.counts[g.of] * g.factor)
        self._cache: dict = {}
        self._plan = plan

    def ranges(self, dim_layout) -> list[Range]:
        """Kept [start, stop) ranges of one tensor dim (full coordinates, merged)."""
        if dim_layout in self._cache:
            return self._cache[dim_layout]
        out: list[Range] = []
        offset = 0
        for seg in dim_layout:
            if isinstance(seg, int):
                out.append((offset, offset + seg))
                offset += seg
                continue
            if isinstance(seg, _RankSeg):         # the first k components
                out.append((offset, offset + self.rank_of(seg)))
                offset += seg.rank
                continue
            g = self._plan.groups[seg]
            c = self.counts[seg]
            front = self.front[seg]
            blocks, size, keep = (g.heads, g.channels // g.heads, c // g.heads) if g.heads else (1, g.channels, c)
            for b in range(blocks):
                start = offset + b * size + (0 if front else size - keep)
                out.append((start, start + keep))
            offset += g.channels
        merged: list[Range] = []
        for a, b in out:
            if a == b:
                continue
            if merged and merged[-1][1] == a:
                merged[-1] = (merged[-1][0], b)
            else:
                merged.append((a, b))
        self._cache[dim_layout] = merged
        return merged

    def row(self, layout: tuple) -> Optional[int]:
        """BN statistics row of a norm whose statistics have `layout` (None: the full width's own)."""
        return self.rows[next(seg for seg in layout[0] if isinstance(seg, str))]

    def count(self, dim_layout) -> int:
        return sum(b - a for a, b in self.ranges(dim_layout))

    def rank_of(self, seg: _RankSeg) -> int:
        """Components a low-rank layer keeps: rank_for(its stage's ratio, active in, active out)."""
        ratio = (self.ranks or self._plan.rank_ratios)[seg.stage]
        d_in = seg.in_features if seg.in_layout is None else self.count(seg.in_layout)
        d_out = seg.out_features if seg.out_layout is None else self.count(seg.out_layout)
        return rank_for(ratio, d_in, d_out)

    def kept_depth(self, stage: int) -> int:
        return self._plan.full_depths[stage] if self.depths is None or self.depths[stage] is None \
            else self.depths[stage]


def _select(t: torch.Tensor, layout: tuple, width: _Width) -> torch.Tensor:
    """`t` restricted to the kept ranges of every sliced dim (a view when each dim keeps one range)."""
    for dim, dim_layout in enumerate(layout):
        if dim_layout is None:
            continue
        ranges = width.ranges(dim_layout)
        if len(ranges) == 1:
            t = t.narrow(dim, ranges[0][0], ranges[0][1] - ranges[0][0])
        else:
            t = torch.cat([t.narrow(dim, a, b - a) for a, b in ranges], dim)
    return t


def _dim_layout(value: Any, where: str) -> Optional[tuple]:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int)) for v in value):
        return tuple(value)
    raise ValueError(f'slimming_spec: {where}: a dim layout is None, a group name or a list of group '
                     f'names and fixed lengths, got {value!r}')


class _Plan:
    """The family's declaration checked against the built model."""

    def __init__(self, model: DenseBackbone, spec: dict, widths: list[float], off_grid: bool):
        owner = type(model).__name__
        self.owner = owner
        self.widths = widths
        self.off_grid = off_grid
        self.groups: dict[str, _Group] = {}
        for name, g in spec['groups'].items():
            if 'of' in g:
                if g['of'] not in self.groups:
                    raise ValueError(f'{owner}.slimming_spec: group {name!r} derives from {g["of"]!r}, which '
                                     'is not declared before it')
                src = self.groups[g['of']]
                heads = int(g.get('heads', 0))
                factor = float(g.get('factor', 1.0))
                full = src.channels if heads else int(src.channels * factor)
                self.groups[name] = _Group(name, full, of=g['of'], factor=factor, heads=heads)
                if heads and (full % heads or src.multiple % heads):
                    raise ValueError(f'{owner}.slimming_spec: group {name!r}: {full} channels / source multiple '
                                     f'{src.multiple} not divisible by {heads} heads')
            else:
                multiple = int(g.get('multiple', 1))
                if g['channels'] % multiple:
                    raise ValueError(f'{owner}.slimming_spec: group {name!r}: {g["channels"]} channels are not '
                                     f'a multiple of {multiple}')
                self.groups[name] = _Group(name, int(g['channels']), multiple=multiple,
                                           arch=[tuple(p) for p in g.get('arch', ())], kwargs=list(g.get('kwargs', ())))
        self.entries: list[_Entry] = []
        by_module: dict[int, _Entry] = {}
        lowrank_cfg = getattr(model, 'lowrank_cfg', None)
        self.rank_ratios: tuple = tuple(lowrank_cfg['ratio']) if lowrank_cfg else ()
        self.rank_segs: list[_RankSeg] = []
        lowrank_names = {id(m): n for n, m in model.named_modules() if isinstance(m, LowRankLinear)}
        for path, layout in spec['tensors'].items():
            layout = tuple(_dim_layout(v, path) for v in (layout if isinstance(layout, tuple) else (layout,)))
            for dim_layout in layout:
                for seg in dim_layout or ():
                    if isinstance(seg, str) and seg not in self.groups:
                        raise ValueError(f'{owner}.slimming_spec: {path} names unknown group {seg!r}')
            module, tensor_name = _resolve(model, path)
            entry = by_module.get(id(module))
            if entry is None:
                entry = by_module[id(module)] = _Entry(path if tensor_name is None else path.rsplit('.', 1)[0],
                                                       module, [])
                self.entries.append(entry)
            if tensor_name is not None:
                if isinstance(module, LowRankLinear):
                    raise ValueError(f'{owner}.slimming_spec: {path}: declare the low-rank layer by its module path')
                entry.tensors.append((tensor_name, layout))
                continue
            if isinstance(module, LowRankLinear):
                self._add_lowrank(model, entry, lowrank_names[id(module)], layout)
                continue
            channel_layout = (layout[0],)
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                entry.bn = channel_layout
            if isinstance(module, nn.LayerNorm):
                entry.norm_shape = layout[0]
            for name, value in module.named_parameters(recurse=False):
                entry.tensors.append((name, layout if name == 'weight' and value.ndim > 1 else channel_layout))
            if isinstance(module, nn.Conv2d) and module.groups > 1:
                if not (module.groups == module.in_channels == module.out_channels):
                    raise ValueError(f'{owner}.slimming_spec: {path}: only depth-wise grouped convolutions '
                                     f'can be sliced (groups {module.groups}, in {module.in_channels})')
                entry.groups = layout[0]
        for name in sorted(set(lowrank_names.values()) - {e.path for e in self.entries if e.lowrank}):
            entry = _Entry(name, model.get_submodule(name), [])       # a layer no width reaches: rank only
            self.entries.append(entry)
            self._add_lowrank(model, entry, name, (None, None))
        for path, group in spec.get('scales', {}).items():
            module = model.get_submodule(path)
            g = self.groups[group]
            if not g.heads:
                raise ValueError(f'{owner}.slimming_spec: scale of {path} needs a per-head group, got {group!r}')
            entry = by_module.get(id(module))
            if entry is None:
                entry = by_module[id(module)] = _Entry(path, module, [])
                self.entries.append(entry)
            if getattr(module, 'scale', None) is None:       # an explicit qk_scale stays as it is
                entry.scale = (g.channels // g.heads) ** -0.5
        self.scale_key = spec.get('scale_key')
        self.head_dim_key = spec.get('head_dim_key')
        self.outputs = [_dim_layout(o, 'outputs') for o in spec['outputs']]
        self.depth_stages: list[tuple[str, tuple, nn.ModuleList]] = []
        for k, d in enumerate(spec.get('depths', ())):
            blocks = model.get_submodule(d['blocks'])
            if not isinstance(blocks, nn.ModuleList) or not len(blocks):
                raise ValueError(f'{owner}.slimming_spec: depths[{k}] {d["blocks"]!r} is not a non-empty ModuleList')
            self.depth_stages.append((d['blocks'], tuple(d['arch']), blocks))
        self.full_depths = [len(blocks) for _, _, blocks in self.depth_stages]
        free = [g.name for g in self.groups.values() if g.of is None]
        self.ties: dict[str, str] = {}          # free group → the free group whose ratio it always takes
        for tie in spec.get('ties', ()):
            unknown = [g for g in tie if g not in free]
            if unknown:
                raise ValueError(f'{owner}.slimming_spec: ties name {unknown}, which are not free groups')
            self.ties.update({g: tie[0] for g in tie[1:]})
        self.free = [g for g in free if g not in self.ties]
        self.bn_rows = {r: i for i, r in enumerate(w for w in widths if w != 1.0)}
        self._check_shapes(model)
        if off_grid and any(e.bn for e in self.entries):
            raise invalid_argument(owner, 'slimmable', dict(off_grid=True), 'off_grid=False for a model with '
                                   'BatchNorm', ' (its statistics are kept per trained width)')

    def _add_lowrank(self, model: nn.Module, entry: _Entry, name: str, layout: tuple) -> None:
        """The tensors of a low-rank layer declared with its dense layout (out, in[, ...])."""
        module = entry.module
        out_l = layout[0]
        in_l = layout[1] if len(layout) > 1 else None
        seg = _RankSeg(name, model.lowrank_stages[name], module.rank, module.in_features, module.out_features,
                       in_l, out_l)
        self.rank_segs.append(seg)
        entry.lowrank = True
        entry.tensors += [('first', ((seg,), in_l)), ('middle', ((seg,), (seg,))), ('last', (out_l, (seg,)))]
        if module.bias is not None:
            entry.tensors.append(('bias', (out_l,)))

    def _check_shapes(self, model: nn.Module) -> None:
        full = _Width(self, 1.0)
        for e in self.entries:
            for name, layout in e.tensors:
                t = getattr(e.module, name)
                for dim, dim_layout in enumerate(layout):
                    if dim_layout is not None and (dim >= t.ndim or full.count(dim_layout) != t.shape[dim]):
                        raise ValueError(f'{self.owner}.slimming_spec: {e.path}.{name} dim {dim} declared as '
                                         f'{dim_layout} = {full.count(dim_layout)} channels, the tensor has shape '
                                         f'{tuple(t.shape)}')


def _resolve(model: nn.Module, path: str) -> tuple[nn.Module, Optional[str]]:
    """Module path → (module, None); parameter/buffer path → (owner module, name)."""
    try:
        return model.get_submodule(path), None
    except AttributeError:
        pass
    owner, _, name = path.rpartition('.')
    module = model.get_submodule(owner) if owner else model
    if name not in module._parameters and name not in module._buffers:
        raise ValueError(f'{type(model).__name__}.slimming_spec: {path!r} is neither a module nor a tensor')
    return module, name


# ---------------------------------------------------------------------------------------------------
# the state a slimmable model carries, and the hooks that slice while a width < 1 is active
# ---------------------------------------------------------------------------------------------------
class _SlimState:
    def __init__(self, plan: _Plan, cfg: dict):
        self.plan = plan
        self.cfg = cfg
        self.width = _Width(plan, 1.0)
        self.handles: list = []
        self.saved_blocks: list = []


def _enter(entry: _Entry, state: _SlimState, module: nn.Module, args: tuple) -> None:
    width = state.width
    saved: list = []
    for name, layout in entry.tensors:
        store = module._parameters if name in module._parameters else module._buffers
        saved.append((store, name, store[name]))
        store[name] = _select(store[name], layout, width)
    row = width.row(entry.bn) if entry.bn is not None and module.running_mean is not None else None
    if row is not None:
        for name in _BN_STATS:
            saved.append((module._buffers, name, module._buffers[name]))
            module._buffers[name] = _select(module._buffers[f'slim_{name}'][row], entry.bn, width)
        saved.append((module._buffers, 'num_batches_tracked', module._buffers['num_batches_tracked']))
        module._buffers['num_batches_tracked'] = module._buffers['slim_num_batches_tracked'][row]
    elif entry.bn is not None and module.running_mean is not None:     # a group at width 1: its own statistics
        for name in _BN_STATS:
            saved.append((module._buffers, name, module._buffers[name]))
            module._buffers[name] = _select(module._buffers[name], entry.bn, width)
    attrs = []
    if entry.norm_shape is not None:
        attrs.append(('normalized_shape', (width.count(entry.norm_shape),)))
    if entry.groups is not None:
        attrs.append(('groups', width.count(entry.groups)))
    if entry.scale is not None:
        attrs.append(('scale', entry.scale))
    for attr, value in attrs:
        saved.append((None, attr, getattr(module, attr)))
        object.__setattr__(module, attr, value)
    entry.stack.append(saved)


def _exit(entry: _Entry, module: nn.Module, args: tuple, output: Any) -> None:
    if not entry.stack:
        return
    for store, name, value in reversed(entry.stack.pop()):
        if store is None:
            object.__setattr__(module, name, value)
        else:
            store[name] = value


def _pad_outputs(state: _SlimState, model: nn.Module, args: tuple, outputs: Any) -> Any:
    return pad_to_full(outputs, _channel_map(state, state.width))


def _truncate_depths(state: _SlimState, model: nn.Module, args: tuple) -> None:
    """For one forward: each depth stage's ModuleList holds only its first kept blocks (the stage's own
    loop then runs those; the parameters of the others stay in the model, untouched)."""
    if state.width.depths is None or state.saved_blocks:
        return
    for k, (_, _, blocks) in enumerate(state.plan.depth_stages):
        keep = state.width.kept_depth(k)
        if keep < len(blocks):
            state.saved_blocks.append((blocks, blocks._modules))
            blocks._modules = type(blocks._modules)(list(blocks._modules.items())[:keep])


def _restore_depths(state: _SlimState) -> None:
    while state.saved_blocks:
        blocks, modules = state.saved_blocks.pop()
        blocks._modules = modules


def _restore_depths_hook(state: _SlimState, model: nn.Module, args: tuple, outputs: Any) -> None:
    _restore_depths(state)


def _install(model: DenseBackbone, state: _SlimState) -> None:
    for handle in state.handles:
        handle.remove()
    state.handles = []
    if state.width.full:
        return
    state.handles.append(model.register_forward_pre_hook(functools.partial(_truncate_depths, state)))
    if state.width.ratio != 1.0 or state.width.ranks is not None:
        for e in state.plan.entries:
            if state.width.ratio == 1.0 and not e.lowrank:        # width 1, other ranks: low-rank layers only
                continue
            state.handles.append(e.module.register_forward_pre_hook(functools.partial(_enter, e, state)))
            state.handles.append(e.module.register_forward_hook(functools.partial(_exit, e), always_call=True))
    state.handles.append(model.register_forward_hook(functools.partial(_pad_outputs, state)))
    state.handles.append(model.register_forward_hook(functools.partial(_restore_depths_hook, state),
                                                     always_call=True))


def _state(model: nn.Module, what: str = 'set_width') -> _SlimState:
    state = getattr(model, '_slim_state', None)
    if state is None:
        raise invalid_argument(what, 'model', type(model).__name__, 'a backbone built with slimmable=dict(...) '
                               '(constructor, config or create_backbone)')
    return state


def _check_ratio(state: _SlimState, ratio: Any, what: str, name: str = 'width') -> float:
    grid = state.plan.widths
    shown = ', '.join(f'{w:g}' for w in grid)
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
        raise invalid_argument(what, name, ratio, f'a number in (0, 1]; trained widths: {shown}')
    for w in grid:
        if abs(ratio - w) < _EPS:
            return w
    if state.plan.off_grid and grid[0] <= ratio <= 1:
        return float(ratio)
    raise invalid_argument(what, name, ratio, f'one of the trained widths {shown}',
                           ' (off the trained grid)' if not state.plan.off_grid else ' (below the smallest width)')


def _check_width(state: _SlimState, width: Any, what: str = 'set_width') -> 'float | dict[str, float]':
    """A width: one ratio, or one per width group (`width_groups`) as a dict or a sequence in that order.
    Groups the family ties to another (`ties` in its spec) take that group's ratio."""
    plan = state.plan
    free = plan.free
    if isinstance(width, dict):
        unknown = sorted(set(width) - set(free) - set(plan.ties))
        if unknown:
            raise invalid_argument(what, 'width', width, f'a dict over the width groups {free}',
                                   f' (unknown groups {unknown})')
        ratios = {g: _check_ratio(state, width.get(g, 1.0), what, f'width[{g!r}]') for g in free}
        for member, leader in plan.ties.items():
            if member in width and abs(width[member] - ratios[leader]) > _EPS:
                raise invalid_argument(what, 'width', width, f'width[{member!r}] = width[{leader!r}] (tied: '
                                       f'{plan.owner} keeps them equal)')
    elif isinstance(width, (list, tuple)):
        if len(width) != len(free):
            raise invalid_argument(what, 'width', width, f'one ratio per width group {free} ({len(free)})')
        ratios = {g: _check_ratio(state, r, what, f'width[{i}]') for i, (g, r) in enumerate(zip(free, width))}
    else:
        return _check_ratio(state, width, what)
    values = set(ratios.values())
    if len(values) == 1:
        return values.pop()
    ratios.update({member: ratios[leader] for member, leader in plan.ties.items()})
    return ratios


def _check_depths(state: _SlimState, depths: Any, what: str = 'set_width') -> Optional[tuple]:
    """None (every block) or one kept depth per depth stage (`depth_stages`), 1 ≤ d ≤ the stage's depth."""
    if depths is None:
        return None
    full = state.plan.full_depths
    if not full:
        raise invalid_argument(what, 'depths', depths, 'None: this family declares no droppable blocks')
    if (not isinstance(depths, (list, tuple)) or len(depths) != len(full)
            or any(d is not None and (isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= f)
                   for d, f in zip(depths, full))):
        raise invalid_argument(what, 'depths', depths, f'one block count per stage, 1 ≤ d ≤ {full}')
    return tuple(f if d is None else int(d) for d, f in zip(depths, full))


def _check_ranks(state: _SlimState, ranks: Any, what: str = 'set_width') -> Optional[tuple]:
    """None (the built ratios) or one rank ratio in (0, 1] per stage of the low-rank layers."""
    if ranks is None:
        return None
    built = state.plan.rank_ratios
    if not built:
        raise invalid_argument(what, 'ranks', ranks, 'None: the model has no low-rank layers (build it with '
                               'lowrank=dict(ratio=...) besides slimmable=)')
    if (not isinstance(ranks, (list, tuple)) or len(ranks) != len(built)
            or any(isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= 1 for r in ranks)):
        raise invalid_argument(what, 'ranks', ranks, f'one rank ratio in (0, 1] per stage ({len(built)}; built '
                               f'with {list(built)})')
    return tuple(float(r) for r in ranks)


def _sub_network(state: _SlimState, width: Any, depths: Any, ranks: Any, what: str
                 ) -> tuple['float | dict[str, float]', _Width]:
    """(checked width, the sub-network); a rank ratio whose k exceeds a layer's built rank is refused."""
    ratio = _check_width(state, width, what)
    kept = _check_depths(state, depths, what)
    checked = _check_ranks(state, ranks, what)
    w = _Width(state.plan, ratio, kept, checked)
    if w.ranks is not None:
        for seg in state.plan.rank_segs:
            k = w.rank_of(seg)
            if k > seg.rank:
                raise invalid_argument(what, 'ranks', list(ranks), 'ratios whose rank fits every low-rank layer\'s '
                                       f'built rank (built ratios {list(state.plan.rank_ratios)}; any ratio up to '
                                       'those fits)', f' ({seg.path}: rank {k} > its built {seg.rank})')
    return ratio, w


# ---------------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------------
def apply_slimmable(model: DenseBackbone, cfg: Any) -> None:
    """`slimmable=dict(min_width=0.25, step=1/16, widths=None, off_grid=False)` (or True: defaults); the
    mechanism registered for the `slimmable=` keyword (at the end of this module)."""
    owner = type(model).__name__
    if cfg is True:
        cfg = {}
    if not isinstance(cfg, dict):
        raise invalid_argument(owner, 'slimmable', cfg, 'None, True or a dict with keys '
                               f'{sorted(SLIMMABLE_DEFAULTS)}')
    unknown = sorted(set(cfg) - set(SLIMMABLE_DEFAULTS))
    if unknown:
        raise invalid_argument(owner, 'slimmable', cfg, f'a dict with keys {sorted(SLIMMABLE_DEFAULTS)}',
                               f' (unknown keys {unknown})')
    cfg = dict(SLIMMABLE_DEFAULTS, **cfg)
    if cfg['widths'] is not None:
        widths = cfg['widths']
        if (not isinstance(widths, (list, tuple)) or not widths
                or any(isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 < w <= 1 for w in widths)
                or not any(abs(w - 1) < _EPS for w in widths)):
            raise invalid_argument(owner, 'slimmable.widths', widths, 'a list of numbers in (0, 1] including 1.0')
        widths = sorted({round(float(w), 9) for w in widths})
    else:
        low, step = cfg['min_width'], cfg['step']
        if isinstance(low, bool) or not isinstance(low, (int, float)) or not 0 < low <= 1:
            raise invalid_argument(owner, 'slimmable.min_width', low, 'a number in (0, 1]')
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not 0 < step <= 1:
            raise invalid_argument(owner, 'slimmable.step', step, 'a number in (0, 1]')
        n = _round_half_up((1 - low) / step)
        if abs(low + n * step - 1) > 1e-6:
            raise invalid_argument(owner, 'slimmable', cfg, 'min_width + k·step = 1 for an integer k',
                                   f' ({low:g} + k·{step:g} never reaches 1)')
        widths = [round(low + k * step, 9) for k in range(n)] + [1.0]
    lowrank_cfg = getattr(model, 'lowrank_cfg', None)
    if lowrank_cfg and lowrank_cfg.get('skip_larger'):
        raise invalid_argument(owner, 'lowrank', dict(lowrank_cfg), "skip_larger=False together with slimmable=",
                               ' (which layers stay dense would depend on the width)')
    spec_fn = getattr(model, 'slimming_spec', None)
    if spec_fn is None:
        raise NotImplementedError(f'{owner} does not declare its channel groups (slimming_spec); '
                                  'slimmable= is not available for it')
    plan = _Plan(model, spec_fn(), widths, bool(cfg['off_grid']))
    rows = len(plan.bn_rows)
    for e in plan.entries:
        if e.bn is None or e.module.running_mean is None:
            continue
        _add_bn_rows(e.module, rows)
    model.OPTIONAL_MODEL_KEYS = tuple(model.OPTIONAL_MODEL_KEYS) + (r'\.slim_(running_mean|running_var|'
                                                                      r'num_batches_tracked)$',)
    model._slim_state = _SlimState(plan, cfg)


def _fill_missing_bn_rows(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """An ordinary checkpoint (no per-width rows): every width starts from the full statistics (and, with
    per-width affine rows, the full weight and bias)."""
    for name in _BN_STATS + ('num_batches_tracked',) + _BN_AFFINE:
        key, full = prefix + 'slim_' + name, prefix + name
        rows = getattr(module, 'slim_' + name, None)
        if rows is not None and key not in state_dict and full in state_dict:
            state_dict[key] = state_dict[full].detach().reshape(1, -1).repeat(rows.shape[0], 1).reshape(rows.shape)


def track_norms(backbone: nn.Module, modules: Sequence[nn.Module], affine: bool = False) -> int:
    """Give the BatchNorms among `modules` (the neck and heads reading a slimmable backbone) running
    statistics per trained width, as the backbone's own BatchNorms have: their inputs' statistics change
    with the width, so one shared estimate fits no width (Scala training updates it at four widths per step).
    A uniform width of the trained grid other than 1 uses its row (`slim_running_*` buffers, saved in
    checkpoints; an ordinary checkpoint fills every row from the full statistics); width 1, off-grid and
    per-group widths use the ordinary statistics. `affine=True`: the weight and bias too have a row per
    width (`slim_weight` / `slim_bias` parameters; slimmable networks' switchable BatchNorm), exported as
    that width's. Returns how many BatchNorms were given rows."""
    state = _state(backbone, 'track_norms')
    rows = len(state.plan.bn_rows)
    count = 0
    for module in modules:
        if (not isinstance(module, nn.modules.batchnorm._BatchNorm) or module.running_mean is None
                or 'slim_running_mean' in module._buffers):
            continue
        if affine and module.affine:
            module.slim_weight = nn.Parameter(module.weight.detach().repeat(rows, 1))
            module.slim_bias = nn.Parameter(module.bias.detach().repeat(rows, 1))
        _add_bn_rows(module, rows)
        module.register_forward_pre_hook(functools.partial(_enter_downstream_norm, state))
        module.register_forward_hook(_exit_downstream_norm, always_call=True)
        count += 1
    return count


def _add_bn_rows(bn: nn.Module, rows: int) -> None:
    bn.register_buffer('slim_running_mean', bn.running_mean.detach().repeat(rows, 1))
    bn.register_buffer('slim_running_var', bn.running_var.detach().repeat(rows, 1))
    bn.register_buffer('slim_num_batches_tracked', bn.num_batches_tracked.detach().repeat(rows))
    bn.register_load_state_dict_pre_hook(_fill_missing_bn_rows)


def _downstream_row(state: _SlimState) -> Optional[int]:
    """The statistics row of a tracked downstream BatchNorm at the current width (None: its own)."""
    ratio = state.width.ratio
    return None if isinstance(ratio, dict) or ratio == 1.0 else state.plan.bn_rows.get(ratio)


def _enter_downstream_norm(state: _SlimState, module: nn.Module, args: tuple) -> None:
    row = _downstream_row(state)
    saved, saved_affine = {}, {}
    if row is not None:
        for name in _BN_STATS + ('num_batches_tracked',):
            saved[name] = module._buffers[name]
            module._buffers[name] = module._buffers['slim_' + name][row]
        if 'slim_weight' in module._parameters:       # per-width affine: that width's row (a view: its gradient)
            for name in _BN_AFFINE:
                saved_affine[name] = module._parameters[name]
                module._parameters[name] = module._parameters['slim_' + name][row]
    module._slim_saved, module._slim_saved_affine = saved, saved_affine


def _exit_downstream_norm(module: nn.Module, args: tuple, output: Any) -> None:
    module._buffers.update(getattr(module, '_slim_saved', {}))
    module._parameters.update(getattr(module, '_slim_saved_affine', {}))
    module._slim_saved, module._slim_saved_affine = {}, {}


def reset_norm_statistics(backbone: nn.Module, norms: Sequence[nn.Module]) -> None:
    """Reset the running statistics that `norms` (BatchNorms of the backbone or tracked by `track_norms`)
    use at the backbone's current width: their row for it, or their own at width 1 (for re-estimating them
    with the final weights: `registry.calibrate_scala_norms`)."""
    state = _state(backbone, 'reset_norm_statistics')
    entries = {id(e.module): e for e in state.plan.entries if e.bn is not None}
    for norm in norms:
        row = None
        if 'slim_running_mean' in norm._buffers:
            entry = entries.get(id(norm))
            row = state.width.row(entry.bn) if entry is not None else _downstream_row(state)
        if row is None:
            norm.reset_running_stats()
        else:
            norm.slim_running_mean[row].zero_()
            norm.slim_running_var[row].fill_(1)
            norm.slim_num_batches_tracked[row].zero_()


def is_slimmable(model: nn.Module) -> bool:
    return getattr(model, '_slim_state', None) is not None


def trained_widths(model: nn.Module) -> list[float]:
    """The width grid the model was built for, smallest first (ends with 1.0)."""
    return list(_state(model, 'trained_widths').plan.widths)


def width_groups(model: nn.Module) -> list[str]:
    """The free channel groups a per-group width names, in order (per stage; per branch in HRFormer)."""
    return list(_state(model, 'width_groups').plan.free)


def depth_stages(model: nn.Module) -> list[int]:
    """Full block count of each stage whose trailing blocks can be dropped (`depths=`); [] if none."""
    return list(_state(model, 'depth_stages').plan.full_depths)


def get_width(model: nn.Module) -> 'float | dict[str, float]':
    """The active width: one ratio, or a dict over `width_groups` when they differ."""
    return _state(model, 'get_width').width.ratio


def get_depths(model: nn.Module) -> Optional[tuple]:
    """The active kept depth per depth stage, or None (every block)."""
    return _state(model, 'get_depths').width.depths


def get_ranks(model: nn.Module) -> Optional[tuple]:
    """The active rank ratio per stage of the low-rank layers, or None (the built ones)."""
    return _state(model, 'get_ranks').width.ranks


def rank_ratios(model: nn.Module) -> list[float]:
    """The rank ratio per stage the low-rank layers were built with (the largest a sub-network is sure to
    fit); [] without `lowrank=`."""
    return list(_state(model, 'rank_ratios').plan.rank_ratios)


def rank_choices(model: nn.Module, ranks: Optional[Sequence[float]], owner: str, name: str) -> list[list[float]]:
    """Per stage of the low-rank layers, the rank ratios a sub-network may take: the values of `ranks` up to
    that stage's built ratio (ascending; they always fit the built rank), or the built ratio alone when
    `ranks` is None; [] without low-rank layers. `ranks` on a model without low-rank layers, values outside
    (0, 1], or values leaving a stage none are refused (`owner`: `name`=... in the message)."""
    built = rank_ratios(model)
    if ranks is None:
        return [[float(r)] for r in built]
    given = list(ranks)
    if not built:
        raise invalid_argument(owner, name, given, f'no {name}: the model has no low-rank layers (build its '
                               'backbone with lowrank=dict(ratio=...) beside slimmable=)')
    if not given or any(isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= 1 for r in given):
        raise invalid_argument(owner, name, given, 'rank ratios in (0, 1]')
    values = [sorted({float(r) for r in given if r <= b + 1e-9}) for b in built]
    empty = [k for k, v in enumerate(values) if not v]
    if empty:
        raise invalid_argument(owner, name, given, f'at least one value per stage up to its built ratio '
                               f'{built}', f' (none for stage(s) {empty})')
    return values


def set_width(model: nn.Module, width: 'float | dict | Sequence[float]', depths: Optional[Sequence[int]] = None,
              ranks: Optional[Sequence[float]] = None) -> 'float | dict[str, float]':
    """Run `model` (built with `slimmable=`) as a sub-network from now on; returns the width set.

    `width`: one ratio, or one per width group (`width_groups(model)`: a dict, or a sequence in that order),
    each a trained width. `depths`: None (every block) or the number of leading blocks each depth stage
    keeps (`depth_stages(model)`). `ranks` (a model built with `lowrank=` too): None (the built ratios) or
    a rank ratio per stage; each low-rank layer keeps its first rank_for(ρ, active in, active out)
    components. Width 1 with every block and the built ranks restores the ordinary backbone exactly (no
    hooks). Raises for widths outside (0, 1] or off the trained grid (unless the model was built with
    `off_grid=True` and has no BatchNorm), for depths outside 1..the stage's depth, and for rank ratios
    whose rank exceeds a layer's built rank."""
    state = _state(model)
    ratio, new = _sub_network(state, width, depths, ranks, 'set_width')
    if ratio != 1.0 or new.depths is not None or new.ranks is not None:
        from .adapters import has_adapters
        if has_adapters(model):
            raise NotImplementedError(f'{type(model).__name__}: adapter= modules are not slimmable; run it at '
                                      'width 1, or merge the adapters (backbones.merge_adapters) first')
    if new.ratio != state.width.ratio or new.depths != state.width.depths or new.ranks != state.width.ranks:
        state.width = new
        _install(model, state)
    return ratio


@contextlib.contextmanager
def at_width(model: nn.Module, width: 'float | dict | Sequence[float]', depths: Optional[Sequence[int]] = None,
             ranks: Optional[Sequence[float]] = None) -> Iterator[nn.Module]:
    """`with at_width(model, 0.5): outs = model(x)`; the previous width, depths and ranks are restored on exit."""
    previous, previous_depths, previous_ranks = get_width(model), get_depths(model), get_ranks(model)
    set_width(model, width, depths, ranks)
    try:
        yield model
    finally:
        set_width(model, previous, previous_depths, previous_ranks)


def channel_map(model: nn.Module, width: 'float | dict | Sequence[float]') -> list[tuple[int, list[Range]]]:
    """Per output: (full channels, kept [start, stop) ranges) at `width` — where a narrow output's channels
    sit in the full-width output (also what a neck's input weights are sliced by)."""
    state = _state(model, 'channel_map')
    return _channel_map(state, _Width(state.plan, _check_width(state, width, 'channel_map')))


def _channel_map(state: _SlimState, width: _Width) -> list[tuple[int, list[Range]]]:
    full = _Width(state.plan, 1.0)
    return [(full.count(o), width.ranges(o)) for o in state.plan.outputs]


def pad_to_full(outputs: Sequence[torch.Tensor], cmap: Sequence[tuple[int, list[Range]]]) -> tuple:
    """Narrow outputs (N, c, h, w) → (N, C, h, w) with zeros in the inactive channels (`channel_map`)."""
    if len(outputs) != len(cmap):
        raise ValueError(f'pad_to_full: {len(outputs)} outputs for a channel map of {len(cmap)}')
    padded = []
    for out, (channels, ranges) in zip(outputs, cmap):
        if out.shape[1] == channels:
            padded.append(out)
        elif len(ranges) == 1:
            a, b = ranges[0]
            padded.append(F.pad(out, (0, 0, 0, 0, a, channels - b)))
        else:
            full = out.new_zeros((out.shape[0], channels) + tuple(out.shape[2:]))
            index = torch.cat([torch.arange(a, b, device=out.device) for a, b in ranges])
            padded.append(full.index_copy(1, index, out))
    return tuple(padded)


def scala_widths(model: nn.Module, rng: Optional[random.Random] = None) -> list[float]:
    """One Scala training step's widths, largest first: 1.0, one drawn from the upper half of the grid
    [m, 1), one from the lower half (smallest, m), and the smallest (m = the middle of the grid range)."""
    grid = trained_widths(model)
    rng = rng or random
    low, middle = grid[0], (grid[0] + 1) / 2
    upper = [w for w in grid if middle - _EPS <= w < 1]
    lower = [w for w in grid if low < w < middle - _EPS]
    steps = [1.0] + ([rng.choice(upper)] if upper else []) + ([rng.choice(lower)] if lower else [])
    return steps + ([low] if low < 1 else [])


def export_width(model: DenseBackbone, width: 'float | dict | Sequence[float]',
                 depths: Optional[Sequence[int]] = None, ranks: Optional[Sequence[float]] = None) -> DenseBackbone:
    """A natively narrow backbone of `model`'s class for the sub-network (`width`, `depths`, `ranks`) as
    `set_width` takes them: smaller arch (per-stage widths and depths where they differ), the sliced weights
    of the kept blocks and that width's BN statistics; with low-rank layers, built with
    `lowrank=dict(ratio=[the sub-network's rank ratio per stage])` and holding the sliced factors (first k
    components). Its outputs equal `model`'s at that sub-network with the zero channels removed
    (`pad_to_full(narrow(x), channel_map(model, width))` equals them)."""
    state = _state(model, 'export_width')
    plan = state.plan
    ratio, w = _sub_network(state, width, depths, ranks, 'export_width')
    kept = w.depths
    kwargs = copy.deepcopy(getattr(model, '_init_arguments', None))
    if kwargs is None:
        raise RuntimeError(f'{type(model).__name__}: constructor arguments were not recorded; cannot export')
    arch = copy.deepcopy(model.arch_cfg)
    expanded: dict[str, tuple] = {}
    for g in plan.groups.values():
        for path in g.arch:
            if _expand_scalar(arch, path, plan):
                expanded[path[0]] = (model.arch_cfg[path[0]], list(arch[path[0]]))
            _write(arch, path, w.counts[g.name])
        kwargs.update({key: w.counts[g.name] for key in g.kwargs if w.counts[g.name] != g.channels})
    for key, (scalar, full) in expanded.items():     # still one number's rule (uniform width): one number
        new = arch[key]
        if full[0] == scalar and all(n * full[0] == new[0] * f for n, f in zip(new, full)):
            arch[key] = new[0]
    for k, (_, path, _) in enumerate(plan.depth_stages):
        if w.kept_depth(k) != plan.full_depths[k]:
            _write(arch, path, w.kept_depth(k))
    kwargs.update(arch=arch, init_cfg=None)
    scales = {e.scale for e in plan.entries if e.scale is not None}
    if ratio != 1.0 and scales:
        if len(scales) > 1:
            raise ValueError(f'{type(model).__name__}: the full-width softmax scales differ between '
                             f'attention layers ({sorted(scales)}); a narrow model takes one qk_scale')
        where, key = plan.scale_key
        (arch if where == 'arch' else kwargs)[key] = scales.pop()
    if plan.head_dim_key is not None:       # a family whose head dim is an argument (not width / heads)
        head_dims = [w.counts[g.name] // g.heads for g in plan.groups.values() if g.heads]
        where, key = plan.head_dim_key
        (arch if where == 'arch' else kwargs)[key] = head_dims[0] if len(set(head_dims)) == 1 else head_dims
    if plan.rank_ratios:         # a mechanism keyword: not among the recorded constructor arguments
        kwargs['lowrank'] = dict(ratio=list(w.ranks or plan.rank_ratios))
    reference = next(model.parameters())
    narrow = type(model)(**kwargs).to(device=reference.device, dtype=reference.dtype)
    own = narrow.state_dict()
    sliced = _sliced_state_dict(model, state, w)
    for k, (path, _, _) in enumerate(plan.depth_stages):       # the dropped blocks' tensors
        dropped = tuple(f'{path}.{j}.' for j in range(w.kept_depth(k), plan.full_depths[k]))
        sliced = {key: v for key, v in sliced.items() if not key.startswith(dropped)}
    problems = [f'{k}: {tuple(sliced[k].shape)} vs {tuple(v.shape)}' for k, v in own.items()
                if k in sliced and sliced[k].shape != v.shape]
    missing, extra = sorted(set(own) - set(sliced)), sorted(set(sliced) - set(own))
    if problems or missing or extra:
        where = (f'width {ratio if isinstance(ratio, dict) else format(ratio, "g")}'
                 + (f', depths {list(kept)}' if kept else '') + (f', ranks {list(w.ranks)}' if w.ranks else ''))
        raise NotExportableError(f'{type(model).__name__} at {where}: the natively narrow model is not the '
                           f'slice (its structure or the slimming_spec differs): shape mismatches {problems[:5]}, '
                           f'tensors it lacks {extra[:5]}, tensors it has besides {missing[:5]}')
    narrow.load_state_dict({k: sliced[k] for k in own}, strict=True)
    narrow.train(model.training)
    return narrow


def _expand_scalar(arch: dict, path: tuple, plan: _Plan) -> bool:
    """A per-stage arch path (key, i) over a scalar (FocalNet's / S3's one `embed_dim`): the scalar becomes
    the list of full-width counts of the groups written there, so that one entry can change (True). The
    export folds a list that stays proportional to those counts back into one number."""
    if len(path) != 2 or not isinstance(path[1], int) or isinstance(arch.get(path[0]), (list, tuple)):
        return False
    full = {p[1]: g.channels for g in plan.groups.values() for p in g.arch if len(p) == 2 and p[0] == path[0]}
    arch[path[0]] = [full[i] for i in range(len(full))]
    return True


class NotExportableError(RuntimeError):
    """A sub-network whose natively narrow model would be built with other layers than its slice (a family
    that creates a layer only when two channel counts differ, and the sub-network makes them equal)."""


def _write(arch: dict, path: tuple, value: int) -> None:
    target = arch
    for key in path[:-1]:
        if isinstance(target[key], tuple):
            target[key] = list(target[key])
        target = target[key]
    target[path[-1]] = value


def _sliced_state_dict(model: nn.Module, state: _SlimState, width: _Width) -> dict[str, torch.Tensor]:
    """The model's state dict at `width`: declared tensors sliced, BN statistics of that width."""
    out = {k: v for k, v in model.state_dict().items() if '.slim_' not in k}
    for e in state.plan.entries:
        prefix = f'{e.path}.' if e.path else ''
        for name, layout in e.tensors:
            out[prefix + name] = _select(getattr(e.module, name).detach(), layout, width).clone()
        if e.bn is not None and e.module.running_mean is not None:
            row = width.row(e.bn)
            for name in _BN_STATS:
                source = getattr(e.module, name) if row is None else e.module._buffers[f'slim_{name}'][row]
                out[prefix + name] = _select(source.detach(), e.bn, width).clone()
            if row is not None:
                out[prefix + 'num_batches_tracked'] = e.module.slim_num_batches_tracked[row].clone()
    return out


# ---------------------------------------------------------------------------------------------------
# a trained detector / segmenter / pose model → a standalone narrow one (`backbones export-width`)
# ---------------------------------------------------------------------------------------------------
# A consumer is a module reading the backbone outputs (a neck; without one, every head). Its entry in
# INPUT_CONSUMERS takes (its config, its state-dict prefix, the full state dict, the narrow channel count of
# every backbone output), writes the narrow `in_channels` (and what follows from it) into the config and
# returns its input slices: (weight key, input dim, backbone outputs concatenated in that order, trailing
# channels after them that do not come from the backbone and are kept).
Slice = tuple[str, int, list[int], int]


def _fpn_inputs(cfg: dict, prefix: str, state: dict, counts: list[int]) -> list[Slice]:
    """mmdet/mmseg FPN: lateral conv k reads output start_level + k; an 'on_input' extra conv the last."""
    outputs = len(counts)
    start, end = cfg.get('start_level', 0), cfg.get('end_level', -1)
    stop = outputs if end == -1 else end + 1
    found = [(f'{prefix}lateral_convs.{i - start}.conv.weight', 1, [i], 0) for i in range(start, stop)]
    if cfg.get('add_extra_convs', False) in (True, 'on_input'):
        found.append((f'{prefix}fpn_convs.{stop - start}.conv.weight', 1, [stop - 1], 0))
    cfg['in_channels'] = list(counts)
    return found


def _hrfpn_inputs(cfg: dict, prefix: str, state: dict, counts: list[int]) -> list[Slice]:
    """mmdet HRFPN: every output resized and concatenated into `reduction_conv`."""
    cfg['in_channels'] = list(counts)
    return [(f'{prefix}reduction_conv.conv.weight', 1, list(range(len(counts))), 0)]


def _heatmap_head_inputs(cfg: dict, prefix: str, state: dict, counts: list[int]) -> list[Slice]:
    """mmpose HeatmapHead reads the last output with its first layer: a deconvolution (weight dim 0 is the
    input), a convolution or the final 1×1 convolution (dim 1)."""
    cfg['in_channels'] = counts[-1]
    for key, dim in (('deconv_layers.0.weight', 0), ('conv_layers.0.weight', 1), ('final_layer.weight', 1)):
        if prefix + key in state:
            return [(prefix + key, dim, [len(counts) - 1], 0)]
    raise KeyError(f'HeatmapHead: none of deconv_layers.0 / conv_layers.0 / final_layer under {prefix!r}')


def _seg_selection(cfg: dict, counts: list[int], kind: str, transform: Optional[str] = None
                   ) -> tuple[list[int], Optional[str]]:
    """An mmseg decode head's selected backbone outputs (`in_index`, negative counted from the end) and its
    `input_transform` (None: one output; 'resize_concat': the selected outputs concatenated into one input;
    'multiple_select': a list of inputs); writes the narrow `in_channels` in the shape the head takes."""
    transform = cfg.get('input_transform', None) if transform is None else transform
    index = cfg.get('in_index', -1)
    if transform is None:
        if not isinstance(index, int):
            raise ValueError(f'export-width: {kind} in_index={index!r} needs an input_transform')
        selected = [index % len(counts)]
        cfg['in_channels'] = counts[selected[0]]
    elif transform in ('resize_concat', 'multiple_select'):
        selected = [i % len(counts) for i in ([index] if isinstance(index, int) else index)]
        cfg['in_channels'] = [counts[i] for i in selected]
    else:
        raise NotImplementedError(f'export-width: {kind} input_transform={transform!r}')
    return selected, transform


def _fcn_head_inputs(cfg: dict, prefix: str, state: dict, counts: list[int]) -> list[Slice]:
    """mmseg FCNHead: `convs.0` reads the (transformed) input; with concat_input `conv_cat` reads
    [input, conv output]; with num_convs=0 the classifier `conv_seg` reads the input (channels = in_channels)."""
    selected, transform = _seg_selection(cfg, counts, 'FCNHead')
    if transform == 'multiple_select':
        raise NotImplementedError("export-width: FCNHead with input_transform='multiple_select'")
    found = []
    if prefix + 'convs.0.conv.weight' in state:
        found.append((prefix + 'convs.0.conv.weight', 1, selected, 0))
        if prefix + 'conv_cat.conv.weight' in state:
            found.append((prefix + 'conv_cat.conv.weight', 1, selected, int(cfg.get('channels'))))
        return found
    if prefix + 'conv_cat.conv.weight' in state:
        raise NotImplementedError('export-width: FCNHead with num_convs=0 and concat_input: its conv_cat '
                                  'output width is the input width')
    cfg['channels'] = sum(counts[i] for i in selected)
    return [(prefix + 'conv_seg.weight', 1, selected, 0)]


def _uper_head_inputs(cfg: dict, prefix: str, state: dict, counts: list[int]) -> list[Slice]:
    """mmseg UPerHead (always 'multiple_select'): lateral conv k reads selected output k (all but the last);
    the pyramid pooling convs and the `bottleneck` ([last output, pooled maps]) read the last."""
    selected, _ = _seg_selection(cfg, counts, 'UPerHead', 'multiple_select')
    found = [(f'{prefix}lateral_convs.{k}.conv.weight', 1, [i], 0) for k, i in enumerate(selected[:-1])]
    scales = 0
    while f'{prefix}psp_modules.{scales}.1.conv.weight' in state:
        found.append((f'{prefix}psp_modules.{scales}.1.conv.weight', 1, [selected[-1]], 0))
        scales += 1
    found.append((prefix + 'bottleneck.conv.weight', 1, [selected[-1]], scales * int(cfg.get('channels'))))
    return found


def _ocr_head_inputs(cfg: dict, prefix: str, state: dict, counts: list[int]) -> list[Slice]:
    """mmseg OCRHead (second head of a CascadeEncoderDecoder): its `bottleneck` reads the (transformed)
    backbone input; the rest reads the bottleneck's output and the previous head's logits."""
    selected, transform = _seg_selection(cfg, counts, 'OCRHead')
    if transform == 'multiple_select':
        raise NotImplementedError("export-width: OCRHead with input_transform='multiple_select'")
    return [(prefix + 'bottleneck.conv.weight', 1, selected, 0)]


SCALA_WRAPPER_ARGS = ('type', 'task', 'model', 'warmup_iters', 'distill', 'distill_weight', 'teacher', 'val_width',
                      'seed', 'init_cfg', 'rank_ratios', 'calibrate_batches', 'calibrate_widths', 'loss_weights',
                      'norm_affine')
INPUT_CONSUMERS = {'FPN': _fpn_inputs, 'HRFPN': _hrfpn_inputs, 'HeatmapHead': _heatmap_head_inputs,
                   'FCNHead': _fcn_head_inputs, 'UPerHead': _uper_head_inputs, 'OCRHead': _ocr_head_inputs}
"""Config type of a module reading the backbone outputs → which of its weights read which outputs."""


def _consumers(model_cfg: dict) -> list[tuple[str, dict]]:
    """(state-dict prefix, config) of every module reading the backbone outputs: the neck (the first of a
    list of necks), else every head (mmseg decode_head, or each of a cascade's list, and auxiliary_head(s);
    mmpose / mmdet head)."""
    neck = model_cfg.get('neck')
    if neck:
        return [('neck.0.', neck[0])] if isinstance(neck, (list, tuple)) else [('neck.', neck)]
    found = []
    for key in ('decode_head', 'auxiliary_head', 'head', 'bbox_head'):
        value = model_cfg.get(key)
        if isinstance(value, dict):
            found.append((f'{key}.', value))
        elif isinstance(value, (list, tuple)):
            found += [(f'{key}.{i}.', v) for i, v in enumerate(value)]
    return found


def _slice_inputs(key: str, dim: int, outs: list[int], trailing: int, state_dict: dict, cmap: list) -> torch.Tensor:
    """`state_dict[key]` with its input dim restricted to the kept channels of backbone outputs `outs`
    (concatenated in that order) and the `trailing` channels after them."""
    offset, ranges = 0, []
    for i in outs:
        ranges += [(offset + a, offset + b) for a, b in cmap[i][1]]
        offset += cmap[i][0]
    weight = state_dict[key]
    if weight.shape[dim] != offset + trailing:
        raise ValueError(f'export-width: {key} has {weight.shape[dim]} input channels, the backbone outputs '
                         f'{outs} give {offset}' + (f' (+ {trailing} of its own)' if trailing else ''))
    if trailing:
        ranges.append((offset, offset + trailing))
    return torch.cat([weight.narrow(dim, a, b - a) for a, b in ranges], dim).clone()


def export_model(model_cfg: dict, state_dict: dict[str, torch.Tensor], width: 'float | dict | Sequence[float]',
                 depths: Optional[Sequence[int]] = None, ranks: Optional[Sequence[float]] = None
                 ) -> tuple[dict, dict[str, torch.Tensor], DenseBackbone]:
    """A model config (mmdet/mmseg/mmpose `model=dict(backbone=dict(..., slimmable=...), neck=...)`, plain
    dicts) and its full state dict → (config, state dict, narrow backbone) of the standalone narrow model:
    the backbone natively narrow, every consumer of its outputs (the neck; without one, every head: mmseg
    decode_head(s) and auxiliary_head(s), the mmpose head) with `in_channels` and its input weights sliced to
    the kept channels. Its outputs equal the slimmed model's (the inactive channels were zero, so the
    weights on them never contributed). A backbone with `lowrank=` too: the sub-network's `ranks` (None:
    the built ratios) become the exported config's `lowrank=dict(ratio=[per stage])`, its checkpoint holds
    the sliced factors (the low-rank layout, loaded as is: no SVD)."""
    from ._base import BACKBONE_CLASSES
    model_cfg = copy.deepcopy(model_cfg)
    if str(model_cfg.get('type', '')).endswith('ScalaModel'):      # a Scala training config: its task model
        inner = model_cfg.get('model')
        if inner is None:
            inner = {k: v for k, v in model_cfg.items() if k not in SCALA_WRAPPER_ARGS}
            inner['type'] = model_cfg['task']
        model_cfg = copy.deepcopy(inner)
        state_dict = {k[len('model.'):]: v for k, v in state_dict.items() if k.startswith('model.')}
    backbone_cfg = dict(model_cfg['backbone'])
    type_name = str(backbone_cfg.pop('type', '')).split('.')[-1]
    if type_name not in BACKBONE_CLASSES:
        raise invalid_argument('export-width', 'model.backbone.type', type_name,
                               f'one of {sorted(BACKBONE_CLASSES)}')
    if backbone_cfg.get('slimmable') in (None, False):
        raise invalid_argument('export-width', 'model.backbone.slimmable', backbone_cfg.get('slimmable'),
                               'a slimmable backbone config (slimmable=dict(...))')
    consumers = _consumers(model_cfg)
    kinds = [str(c.get('type', '')).split('.')[-1] for _, c in consumers]
    unknown = [f'{p[:-1]}={k!r}' for (p, _), k in zip(consumers, kinds) if k not in INPUT_CONSUMERS]
    if not consumers or unknown:
        raise NotImplementedError(f'export-width: the backbone outputs are read by {", ".join(unknown) or "nothing"}'
                                  f'; slicing the inputs is implemented for {sorted(INPUT_CONSUMERS)}')
    backbone_cfg['init_cfg'] = None
    model = BACKBONE_CLASSES[type_name](**backbone_cfg)
    backbone_state = {k[len('backbone.'):]: v for k, v in state_dict.items() if k.startswith('backbone.')}
    model.load_state_dict(backbone_state)
    narrow = export_width(model, width, depths, ranks)
    cmap = channel_map(model, width)
    counts = [sum(b - a for a, b in r) for _, r in cmap]
    out_state = _downstream_statistics({k: v for k, v in state_dict.items() if not k.startswith('backbone.')},
                                       _downstream_row(_sub_network_state(model, width)))
    out_state.update({f'backbone.{k}': v for k, v in narrow.state_dict().items()})
    for (prefix, consumer), kind in zip(consumers, kinds):
        for key, dim, outs, trailing in INPUT_CONSUMERS[kind](consumer, prefix, state_dict, counts):
            out_state[key] = _slice_inputs(key, dim, outs, trailing, state_dict, cmap)
    defaults = {k: p.default for k, p in _signature(type(narrow)).items()}
    new_backbone = {'type': model_cfg['backbone']['type']}
    for key, value in narrow._init_arguments.items():
        if key in model_cfg['backbone'] or key == 'arch' or value != defaults.get(key, value):
            new_backbone[key] = value
    new_backbone['arch'] = copy.deepcopy(narrow.arch_cfg)
    if getattr(narrow, 'lowrank_cfg', None):
        new_backbone['lowrank'] = dict(ratio=list(narrow.lowrank_cfg['ratio']))
    model_cfg['backbone'] = new_backbone
    return model_cfg, out_state, narrow


def _sub_network_state(model: nn.Module, width: Any) -> _SlimState:
    """The model's slimming state with the sub-network of `width` active (for its statistics row)."""
    state = _state(model, 'export-width')
    view = copy.copy(state)
    view.width = _Width(state.plan, _check_width(state, width, 'export-width'))
    return view


def _downstream_statistics(state_dict: dict[str, torch.Tensor], row: Optional[int]) -> dict[str, torch.Tensor]:
    """Neck / head state dict with each tracked BatchNorm's statistics (and per-width affine) of `row`
    (`track_norms`; None: its own) as its ordinary ones and the per-width rows dropped."""
    out = {k: v for k, v in state_dict.items() if '.slim_' not in k}
    if row is not None:
        for key, value in state_dict.items():
            if '.slim_' in key:
                prefix, name = key.split('.slim_')
                out[f'{prefix}.{name}'] = value[row].clone()
    return out


def _signature(cls: type) -> dict:
    import inspect
    return dict(inspect.signature(cls.__init__).parameters)


# ---------------------------------------------------------------------------------------------------
# Scala training helpers (the OpenMMLab model wrapper is `backbones.registry.ScalaModel`)
# ---------------------------------------------------------------------------------------------------
DISTILL_KINDS = ('softmax', 'sigmoid', 'mse')


def distillation_loss(student: Any, teacher: Any, kind: str) -> torch.Tensor:
    """Progressive knowledge transfer from the next wider net's head output (T = 1), averaged over the
    tensors of `student` / `teacher` (a tensor or nested lists, e.g. one per detection level):

    'softmax': KL(softmax(teacher) ‖ softmax(student)) over dim 1 (segmentation logits, softmax
               classifiers), summed over classes, averaged over the other dims;
    'sigmoid': the same per class with Bernoulli distributions (sigmoid classifiers: RetinaNet, FCOS, ...);
    'mse':     mean squared error (heatmaps are not distributions).
    The teacher is detached here whatever the caller passed."""
    if kind not in DISTILL_KINDS:
        raise invalid_argument('distillation_loss', 'kind', kind, f'one of {DISTILL_KINDS}')
    pairs = list(_leaves(student, teacher))
    total = 0.0
    for s, t in pairs:
        t = t.detach().to(s.dtype)
        if kind == 'mse':
            total = total + F.mse_loss(s, t)
        elif kind == 'softmax':
            total = total + F.kl_div(F.log_softmax(s, 1), F.log_softmax(t, 1), reduction='none',
                                     log_target=True).sum(1).mean()
        else:
            p = torch.sigmoid(t)
            kl = (F.binary_cross_entropy_with_logits(s, p, reduction='none')
                  - F.binary_cross_entropy_with_logits(t, p, reduction='none'))
            total = total + kl.sum(1).mean()
    return total / max(len(pairs), 1)


def _leaves(student: Any, teacher: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(student, torch.Tensor):
        yield student, teacher
        return
    if len(student) != len(teacher):
        raise ValueError(f'distillation_loss: student has {len(student)} outputs, teacher {len(teacher)}')
    for s, t in zip(student, teacher):
        yield from _leaves(s, t)


def detached(outputs: Any) -> Any:
    """A head output (tensor or nested lists/tuples of tensors) with every tensor detached."""
    if isinstance(outputs, torch.Tensor):
        return outputs.detach()
    return type(outputs)(detached(o) for o in outputs)


# ---------------------------------------------------------------------------------------------------
# latency per exported width (the benchmark's methodology: a fresh subprocess per configuration)
# ---------------------------------------------------------------------------------------------------
def benchmark_widths(variant: str, widths: Sequence[float] = (0.25, 0.5, 0.75, 1.0), size=(224, 224),
                     batch: int = 1, threads: int = 2, repeats: int = 5, warmup: int = 2, log=print) -> list[dict]:
    """Inference latency of the natively narrow model `export_width` gives at each width of the zoo
    variant `variant` (speed does not depend on the weights, so each is built from its narrow arch)."""
    from ._factory import create_backbone
    from .benchmark import Config, measure
    model = create_backbone(variant, slimmable=dict(widths=sorted(set(widths) | {1.0})))
    records = []
    for width in widths:
        narrow = export_width(model, width)
        extra = {k: v for k, v in narrow._init_arguments.items()
                 if k not in ('arch', 'init_cfg') and v != model._init_arguments.get(k)}
        rec = measure(Config(variant=variant, size=tuple(size), batch=batch, threads=threads, repeats=repeats,
                             warmup=warmup, arch_overrides=narrow.arch_cfg, model_kwargs=extra))
        rec['width'] = width
        rec['out_channels'] = narrow.out_channels
        records.append(rec)
        log(f"  {variant} width {width:g}: " + (f"ERROR {rec['error']}" if 'error' in rec else
                                                 f"{rec['params_m']:.2f} M params, median {rec['median_ms']:.1f} ms "
                                                 f"(IQR {rec['iqr_ms']:.1f})"))
    return records


def _main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog='python -m backbones.slimming',
                                     description='latency per exported width (natively narrow models)')
    parser.add_argument('variants', nargs='+', help='zoo names, e.g. twins-pcpvt-small')
    parser.add_argument('--widths', nargs='+', type=float, default=[0.25, 0.5, 0.75, 1.0])
    parser.add_argument('--size', default='224x224', help='HxW')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=5)
    args = parser.parse_args(argv)
    from .memory import parse_size     # the one HxW parser of the CLI verbs
    size = parse_size(args.size)
    print('| variant | width | out channels | params (M) | median ms (IQR) | x width 1 |')
    print('|---|---|---|---|---|---|')
    for variant in args.variants:
        recs = benchmark_widths(variant, args.widths, size, args.batch, args.threads, args.repeats,
                                log=lambda *a: None)
        full = next((r['median_ms'] for r in recs if r['width'] == 1.0 and 'error' not in r), None)
        for r in recs:
            if 'error' in r:
                print(f"| {variant} | {r['width']:g} | - | - | ERROR {r['error']} | - |")
                continue
            ratio = f"{r['median_ms'] / full:.2f}" if full else '-'
            print(f"| {variant} | {r['width']:g} | {r['out_channels']} | {r['params_m']:.2f} | "
                  f"{r['median_ms']:.1f} ({r['iqr_ms']:.1f}) | {ratio} |")
    return 0


if __name__ == '__main__':      # `python -m backbones.slimming`: run the imported module, registered once
    import sys
    from backbones.slimming import _main as main
    sys.exit(main())

register_mechanism('slimmable', order=10)(apply_slimmable)
