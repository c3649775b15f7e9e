"""S3 (AutoFormerV2): the searched Swin-style vision transformers S3-T/S/B as dense backbones.

Paper: Chen et al., "Searching the Search Space of Vision Transformer", NeurIPS 2021, arXiv 2111.14725.
Original code: https://github.com/microsoft/Cream @ 4a13c40, `AutoFormerV2/model/SSS.py` (`SSSTransformer`,
MIT License, Copyright (c) Microsoft Corporation), configs `AutoFormerV2/configs/S3-{T,S,B}.yaml`. Only
the ImageNet classifier was released; this is a clean re-implementation written from the facts in
../shared/research/seed_papers_2.md §4 and the golden fixtures of the official code.

Architecture (Swin-v1 variant): 4×4 conv patch embedding + LayerNorm (no absolute position embedding) →
four stages of window-attention blocks with Swin's relative position bias, odd blocks shifted by half a
window, and PatchMerging (LN(4C) → Linear(4C, C_next), no bias) at the END of stages 0-2. Specific to S3:
the head dimension is fixed at 32 (qkv width = heads·32·3, scale 32^-½, so dim = 32·heads), and
`num_heads`, `window_size`, `mlp_ratio` are given per block (nested lists, one entry per block; extra
entries are ignored as by the official code; a plain number means every block of the stage).

Windows at any input size (the generalised official rule). Each block has a window w, its relative
position table has (2w-1)² rows, and odd blocks have shift w//2. w is the official block window at the
geometry of `img_size` (an official constructor argument, default 224): the configured window, or — where
the official code clamps it because the stage map at `img_size` has min(H, W) <= window — min(H, W). So
the tables, and the parameter counts, are exactly the official ones (S3-S: 13×13-row tables in stage 3 at
224). On an actual stage map of h×w tokens a block then uses:

    min(h, w) <= w_block  →  square windows of side min(h, w), no shift (several windows along the long
                             side, as the official code does on 7×14 maps);
    otherwise             →  w_block×w_block windows, odd blocks shifted by w_block // 2.

A window smaller than the table's uses the table's centre rows (its own offsets). At every input where the
official code runs (the input it was built for, maps divisible by their windows) this is its behaviour:
outputs are the official ones (golden cases). Anywhere else the map is zero-padded right/bottom to a
multiple of the window; padded keys get a -1e4 bias (an exact 0 after the softmax in fp32), the official
-100 still separates shifted regions, so a padded token never changes a real token's output. Odd maps are
zero-padded before PatchMerging and the image to a multiple of the patch size (as mmdet's Swin).

How it runs. Padded, rolled, masked windows attend exactly within the cells of a grid on the real map
(`cell_groups`: boundaries every w tokens from the shift, cut by the map's edges), so eager runs attend per
cell: no padded token, no roll, no mask (the official -100 leaves exp(-100) ≈ 4e-44 of cross-region weight,
below fp32 resolution next to 1), and qkv / proj run on the real tokens only (S3-T 512²: stage 3 pads its
32×32 map to 42×42 windows of 14). Traced, compiled and exported graphs keep the padded windows, whose
shapes follow the input size (`WindowAttention._attend_windows`; tests hold both paths equal).

Differences from the original:
    * any input size (the original asserts the built `img_size`); dense outputs: the stage tokens before
      the stage's PatchMerging, NCHW, strides 4/8/16/32, with optional LayerNorms `norm{i}` (`out_norm`,
      as mmdet's Swin); the classification `norm`/`head` are not built (ignored when loading);
    * `relative_position_index` and the shift masks are computed from the actual map (never loaded);
    * checkpoints: official (`{'model': ...}` with buffers, or without them), timm and HF-hub timm
      safetensors (PatchMerging at the start of the next stage, `head.fc`), mmdet/mmseg `SwinTransformer`
      (a Swin-trained S3), detected automatically;
      tables are resized (bicubic, as mmdet's Swin loader) when a config uses another window;
    * `ape=True` is refused (the official constructor raises TypeError for it).
Stages for `frozen_stages`: -1 = patch embedding; i = stage i's blocks, the PatchMerging into it (i > 0)
and its output norm (as mmdet's Swin).
"""
from __future__ import annotations

import functools
import re
from typing import Any, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

from ._base import (POSITIVE, POSITIVE_INT, DenseBackbone, Each, invalid_argument, register_backbone,
                    register_converter)
from ._layers import (Mlp, PatchEmbed, add_residual, drop_path_or_identity, drop_path_schedule,
                      init_linear_or_layernorm, linear, plain_eager, relative_position_bias,
                      relative_position_index, resize_relative_position_tables, run_maybe_checkpointed)
from ._taps import Tap
from .weights import CheckpointError

__all__ = ['S3', 'WindowLayout', 'attention_mask', 'convert_s3', 'window_layout']

HEAD_DIM = 32          # hard-coded in the official WindowAttention
SHIFT_MASK = -100.0    # official bias between tokens of different shifted regions
PAD_MASK = -1e4        # bias of padded keys: exp(-1e4 + O(10)) is exactly 0 in fp32/bf16


# ---------------------------------------------------------------------------------------------------
# window geometry
# ---------------------------------------------------------------------------------------------------
def window_layout(height: int, width: int, window: int, shift: int) -> tuple[int, int]:
    """(window, shift) a block of window `window` / shift `shift` uses on a height×width map: the
    official clamp generalised to any map (module docstring): min(h, w) <= window → (min(h, w), 0)."""
    short = min(height, width)
    if short <= window:
        return short, 0
    return window, shift


class WindowLayout(NamedTuple):
    """How a block attends on a height×width map: square windows of side `window` over the map padded
    right/bottom to multiples of it, rolled by -`shift`, with the additive `mask` (`attention_mask`; None
    where none is needed, and in eager runs, whose cells need none: `window_mask` makes it then)."""
    height: int
    width: int
    window: int
    shift: int
    mask: Optional[torch.Tensor]

    def window_mask(self, device: torch.device | str = 'cpu') -> Optional[torch.Tensor]:
        """The padded windows' mask: the one carried, else `attention_mask` of this geometry."""
        if self.mask is not None:
            return self.mask
        return attention_mask(self.height, self.width, self.window, self.shift, device)


def _partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(N, Hp, Wp, C) → (N·nW, window², C), windows row-major (official window_partition order)."""
    n, hp, wp, c = x.shape
    x = x.view(n, hp // window, window, wp // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def _reverse(windows: torch.Tensor, window: int, n: int, hp: int, wp: int) -> torch.Tensor:
    """(N·nW, window², C) → (N, Hp, Wp, C); the inverse of `_partition`."""
    c = windows.shape[-1]
    x = windows.view(n, hp // window, wp // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(n, hp, wp, c)


def pad_roll(x: torch.Tensor, hp: int, wp: int, shift: int) -> torch.Tensor:
    """(N, H, W, C) → (N, Hp, Wp, C), zero-padded right/bottom and rolled by -`shift` (x itself when there is
    neither): the official windows' input (traced graphs, analysis)."""
    h, w = x.shape[1:3]
    if (hp, wp) != (h, w):
        x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
    return torch.roll(x, (-shift, -shift), (1, 2)) if shift else x


def unroll_crop(y: torch.Tensor, h: int, w: int, shift: int) -> torch.Tensor:
    """The inverse of `pad_roll` on the real tokens: (N, Hp, Wp, C) → (N, H, W, C)."""
    y = torch.roll(y, (shift, shift), (1, 2)) if shift else y
    return y if y.shape[1:3] == (h, w) else y[:, :h, :w]


# Cells: the exact regions a block attends within. The official shifted-window attention (pad, roll, windows,
# masks) is attention within the cells of a grid on the unrolled map: boundaries every `window` tokens from
# `shift` (0 unshifted) on both axes, the first and last cell of an axis cut by the map's edges (the rolled
# edge windows are split by the shift masks; padded keys are masked). Offsets inside a cell are the same as
# in its window, so the relative position bias is the window's. Eager runs attend per cell (no padded token
# is computed, no mask is needed); traced and exported graphs keep the padded windows, whose shapes follow
# the input size (a cell grid is fixed at trace time).
CellGroup = tuple[tuple[int, int, int], tuple[int, int, int]]   # (row run, column run): (start, size, count)


def _axis_runs(length: int, window: int, shift: int) -> list[tuple[int, int, int]]:
    """One axis's cells as runs (start, size, count) of equal-size cells."""
    runs, start = [], 0
    if shift:
        runs.append((0, shift, 1))
        start = shift
    full, rest = divmod(length - start, window)
    if full:
        runs.append((start, window, full))
    if rest:
        runs.append((start + full * window, rest, 1))
    return runs


def cell_groups(height: int, width: int, window: int, shift: int) -> list[CellGroup]:
    """The cells of a height×width map (window / shift of its `WindowLayout`), grouped by shape: at most
    nine groups ((row start, row size, row count), (column start, column size, column count)), each a
    regular grid of row count × column count cells of row size × column size tokens."""
    return [(r, c) for r in _axis_runs(height, window, shift) for c in _axis_runs(width, window, shift)]


def _cells_of(x: torch.Tensor, groups: Sequence[CellGroup], parts: int, heads: int) -> list[torch.Tensor]:
    """(N, H, W, parts·heads·d) → per group (parts, N·cells, heads, a·b, d), cells row-major."""
    n = x.shape[0]
    out = []
    for (r0, a, rows), (c0, b, cols) in groups:
        t = x[:, r0:r0 + rows * a, c0:c0 + cols * b].view(n, rows, a, cols, b, parts, heads, -1)
        out.append(t.permute(5, 0, 1, 3, 6, 2, 4, 7).reshape(parts, n * rows * cols, heads, a * b, -1))
    return out


def _map_of(cells: Sequence[Sequence[torch.Tensor]], groups: Sequence[CellGroup], n: int, h: int, w: int
            ) -> torch.Tensor:
    """The inverse of `_cells_of`: per group its parts, each (N·cells, heads, a·b, d) (a (parts, ...) tensor
    or a sequence of them) → (N, H, W, parts·heads·d)."""
    parts = len(cells[0])
    heads, _, d = cells[0][0].shape[1:]
    out = cells[0][0].new_empty(n, h, w, parts * heads * d)
    for group, ((r0, a, rows), (c0, b, cols)) in zip(cells, groups):
        target = out[:, r0:r0 + rows * a, c0:c0 + cols * b].view(n, rows, a, cols, b, parts, heads, d)
        for i, t in enumerate(group):
            target[..., i, :, :].copy_(t.reshape(n, rows, cols, heads, a, b, d).permute(0, 1, 4, 2, 5, 3, 6))
    return out


def _per_group(flat: Sequence[torch.Tensor], parts: int) -> list[tuple[torch.Tensor, ...]]:
    """Tensors listed group after group, `parts` each (as `_ToCells` returns them) → one tuple per group."""
    return [tuple(flat[i:i + parts]) for i in range(0, len(flat), parts)]


class _ToCells(torch.autograd.Function):
    """`_cells_of` with `_map_of` as its backward: one copy each way (slicing the map per group under
    autograd would accumulate one zero-filled map per group). The parts are separate outputs, so that their
    gradients reach the backward without being stacked first."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, groups: Sequence[CellGroup], parts: int, heads: int):
        ctx.geometry = groups, x.shape[:3], parts
        return tuple(part for cells in _cells_of(x, groups, parts, heads) for part in cells.unbind(0))

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        groups, (n, h, w), parts = ctx.geometry
        return _map_of(_per_group(grads, parts), groups, n, h, w), None, None, None


class _FromCells(torch.autograd.Function):
    """`_map_of` with `_cells_of` as its backward."""

    @staticmethod
    def forward(ctx, groups: Sequence[CellGroup], n: int, h: int, w: int, *cells: torch.Tensor) -> torch.Tensor:
        ctx.geometry = groups, cells[0].shape[1]
        return _map_of([(t,) for t in cells], groups, n, h, w)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        groups, heads = ctx.geometry
        return (None, None, None, None, *(c[0] for c in _cells_of(grad.contiguous(), groups, 1, heads)))


def to_cells(x: torch.Tensor, groups: Sequence[CellGroup], parts: int, heads: int
             ) -> list[tuple[torch.Tensor, ...]]:
    """(N, H, W, parts·heads·d) → per cell group its parts, each (N·cells, heads, a·b, d) (`cell_groups`)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _per_group(_ToCells.apply(x, groups, parts, heads), parts)
    return [tuple(cells.unbind(0)) for cells in _cells_of(x, groups, parts, heads)]


def from_cells(cells: Sequence[torch.Tensor], groups: Sequence[CellGroup], n: int, h: int, w: int) -> torch.Tensor:
    """The inverse of `to_cells` for one part: per group (N·cells, heads, a·b, d) → (N, H, W, heads·d)."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in cells):
        return _FromCells.apply(groups, n, h, w, *cells)
    return _map_of([(t,) for t in cells], groups, n, h, w)


def attention_mask(height: int, width: int, window: int, shift: int,
                   device: torch.device | str = 'cpu') -> Optional[torch.Tensor]:
    """Additive mask (nW, window², window²) [query, key] for a height×width map padded right/bottom to
    multiples of `window` and rolled by -`shift`: SHIFT_MASK between different shifted regions (the
    official regions [0, -w), [-w, -s), [-s, end) per axis of the padded map), PAD_MASK on padded keys.
    Without a shift only the keys matter: (nW, 1, window²). None when there is neither a shift nor padding."""
    hp, wp = (height + window - 1) // window * window, (width + window - 1) // window * window
    if not shift and (hp, wp) == (height, width):
        return None
    if not shift:
        valid = torch.zeros(1, hp, wp, 1, dtype=torch.bool, device=device)
        valid[:, :height, :width] = True
        keys = _partition(valid, window)[..., 0]                          # nW, N
        return torch.zeros(keys.shape, device=device).masked_fill_(~keys, PAD_MASK)[:, None]
    labels = torch.zeros(hp, wp, dtype=torch.int64, device=device)
    if shift:
        for i, part in enumerate((slice(0, -window), slice(-window, -shift), slice(-shift, None))):
            labels[part, :] += 3 * i
            labels[:, part] += i
    valid = torch.zeros(hp, wp, dtype=torch.bool, device=device)
    valid[:height, :width] = True
    if shift:
        valid = valid.roll((-shift, -shift), (0, 1))
    labels = _partition(labels[None, :, :, None], window)[..., 0]        # nW, N
    valid = _partition(valid[None, :, :, None], window)[..., 0]          # nW, N
    mask = torch.zeros(labels.shape + labels.shape[-1:], device=device)  # nW, N (query), N (key)
    mask.masked_fill_(labels[:, :, None] != labels[:, None, :], SHIFT_MASK)
    return mask.masked_fill_(~valid[:, None, :], PAD_MASK)


# ---------------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------------
class WindowAttention(nn.Module):
    """Multi-head self-attention within shifted windows, head dim 32, Swin relative position bias.

    (N, H, W, C) normalised tokens → (N, H, W, C). `qkv` and `proj` run on the real tokens only. Eager:
    attention within the cells of the layout (`cell_groups`), no padding, no mask. Traced, compiled or
    exported: the official windows, cut from the qkv map zero-padded right/bottom and rolled by -shift, with
    the layout's mask (padded keys never attended, padded queries dropped). The table covers windows up to
    `window_size`; a smaller window or cell uses its centre rows."""

    def __init__(self, dim: int, num_heads: int, window_size: int, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 head_dim: int = HEAD_DIM):
        super().__init__()
        if dim != head_dim * num_heads:
            raise ValueError(f'S3: a block of width {dim} needs num_heads = {dim} / {head_dim}, got num_heads='
                             f'{num_heads} (the head dimension is fixed at {head_dim}, as in the official code)')
        self.num_heads = num_heads
        self.window_size = window_size
        self.scale = qk_scale or HEAD_DIM ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.qkv = nn.Linear(dim, num_heads * head_dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.register_buffer('relative_position_index', relative_position_index(window_size), persistent=False)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def position_bias(self, cell: int | tuple[int, int]) -> torch.Tensor:
        """(heads, N, N) relative position bias of a window of side `cell`, or of an a×b cell (a pair)."""
        cell = tuple(cell) if isinstance(cell, (tuple, list)) else (cell, cell)   # (a traced size: a 0-d tensor)
        if cell == (self.window_size, self.window_size):
            index = self.relative_position_index
        else:
            index = _cell_index(cell, self.window_size).to(self.relative_position_index.device)
        return relative_position_bias(self.relative_position_bias_table, index)

    def forward(self, x: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
        y = self._attend_cells(x, layout) if plain_eager() else self._attend_windows(x, layout)
        return self.proj_drop(linear(self.proj, y))

    def _scores(self, q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """softmax(q·k^T·scale + bias) with dropout; q, k (..., heads, L, 32), bias broadcastable."""
        attn = (q * self.scale) @ k.transpose(-2, -1)                     # a fresh tensor
        if attn.dtype != bias.dtype:                                      # autocast: the scores in fp32
            attn = attn.to(torch.promote_types(attn.dtype, bias.dtype))
        attn.add_(bias)                                                   # in place: matmul keeps q and k
        return self.attn_drop(attn.softmax(-1))

    def _attend_cells(self, x: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
        """Eager: attention within each cell (`cell_groups`) of the real tokens; (N, H, W, C) → (N, H, W, C)."""
        return self.attend_groups(x, cell_groups(x.shape[1], x.shape[2], layout.window, layout.shift))

    def attend_groups(self, x: torch.Tensor, groups: Sequence[CellGroup], biases: Optional[dict] = None
                      ) -> torch.Tensor:
        """Attention within the cells of `groups`, which tile x (N, H, W, C) → (N, H, W, C), before `proj`
        (lean inference passes the cells of a band of rows, and `biases`: position biases by cell shape,
        kept across its bands)."""
        n, h, w, _ = x.shape
        biases = {} if biases is None else biases
        outs = []
        cells = to_cells(linear(self.qkv, x), groups, 3, self.num_heads)
        for ((_, a, _), (_, b, _)), (q, k, v) in zip(groups, cells):     # each N·cells, heads, a·b, 32
            if (a, b) not in biases:
                biases[a, b] = self.position_bias((a, b))
            attn = self._scores(q, k, biases[a, b])
            outs.append(attn.to(v.dtype) @ v)
        return from_cells(outs, groups, n, h, w)

    def _attend_windows(self, x: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
        """Traced / compiled / exported: the official padded, rolled windows with the layout's mask (shapes
        follow the input size); (N, H, W, C) → (N, H, W, C)."""
        n, h, w, _ = x.shape
        win, shift, heads = layout.window, layout.shift, self.num_heads
        hp, wp = h + (-h) % win, w + (-w) % win
        qkv = pad_roll(linear(self.qkv, x), hp, wp, shift)                # N, Hp, Wp, 3C
        qkv = qkv.view(n, hp // win, win, wp // win, win, 3, heads, -1).permute(5, 0, 1, 3, 6, 2, 4, 7)
        nw, tokens = (hp // win) * (wp // win), win * win
        q, k, v = (t.reshape(n, nw, heads, tokens, -1) for t in qkv.unbind(0))   # each N, nW, heads, w², 32
        bias = self.position_bias(win)
        mask = layout.window_mask(x.device)
        if mask is not None:
            bias = bias + mask[:, None]                                   # nW, heads, w², w²
        attn = self._scores(q, k, bias).to(v.dtype)
        out = (attn @ v).view(n, hp // win, wp // win, heads, win, win, -1).permute(0, 1, 4, 2, 5, 3, 6)
        return unroll_crop(out.reshape(n, hp, wp, -1), h, w, shift)


def _cell_index(cell: tuple[int, int], table_window: int) -> torch.Tensor:
    """`relative_position_index` of an a×b cell into a window-`table_window` table (CPU). Cached when
    made as an ordinary tensor (eager, not under inference mode or a dispatch mode such as fake tensors)."""
    if not plain_eager() or torch.is_inference_mode_enabled() or _get_current_dispatch_mode() is not None:
        return relative_position_index(cell, table_window)
    return _cached_cell_index(cell, table_window)


@functools.lru_cache(maxsize=256)
def _cached_cell_index(cell: tuple[int, int], table_window: int) -> torch.Tensor:
    return relative_position_index(cell, table_window)


class S3Block(nn.Module):
    """x + DropPath(W-MSA(LN(x))) then x + DropPath(MLP(LN(x))); (N, H, W, C) → (N, H, W, C).

    `window_size` / `shift_size`: the block's window and shift (`window_layout` adapts them to the map).
    `mixer_tap` sees norm1's output (N, H, W, C), `mlp_tap` norm2's output."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int, mlp_ratio: float,
                 qkv_bias: bool = True, qk_scale: Optional[float] = None, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float = 0.0, head_dim: int = HEAD_DIM):
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size, qkv_bias, qk_scale, attn_drop, drop, head_dim)
        self.drop_path = drop_path_or_identity(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.mixer_tap = Tap()
        self.mlp_tap = Tap()

    def tap_consumers(self) -> dict[str, list[str]]:
        return {'mixer_tap': ['attn.qkv'], 'mlp_tap': ['mlp.fc1']}

    def layout(self, height: int, width: int, device: torch.device | str = 'cpu',
               cache: Optional[dict] = None) -> WindowLayout:
        """This block's `WindowLayout` on a height×width map (`cache`: shared by the blocks of a stage;
        the mask only where the padded windows run: traced, compiled or exported graphs)."""
        window, shift = window_layout(height, width, self.window_size, self.shift_size)
        key = (height, width, window, shift)
        if cache is not None and key in cache:
            return cache[key]
        mask = None if plain_eager() else attention_mask(height, width, window, shift, device)
        layout = WindowLayout(height, width, window, shift, mask)
        if cache is not None:
            cache[key] = layout
        return layout

    def forward(self, x: torch.Tensor, layouts: Optional[dict] = None) -> torch.Tensor:
        """`layouts`: a cache shared by the blocks of one stage in one forward (see `layout`)."""
        layout = self.layout(x.shape[1], x.shape[2], x.device, layouts)
        x = add_residual(x, self.drop_path(self.mixer_tap.branch(lambda t: self._attention_branch(t, layout), x)),
                         self.attn)
        return add_residual(x, self.drop_path(self.mlp_tap.feed(self.mlp, x, self.norm2)), self.mlp)

    def _attention_branch(self, x: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
        """(N, H, W, C) → (N, H, W, C): norm1, `mixer_tap`, shifted window attention."""
        return self.attn(self.mixer_tap(self.norm1(x)), layout)


class PatchMerging(nn.Module):
    """2×2 neighbours concatenated (order (0,0), (1,0), (0,1), (1,1)) → LN(4C) → Linear(4C, C_out, no bias).

    (N, H, W, C) → (N, ceil(H/2), ceil(W/2), C_out); odd sizes are zero-padded right/bottom first."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[1:3]
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return linear(self.reduction, self.norm(x))


# ---------------------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------------------
class S3Stage(nn.Module):
    """Blocks, then (stages 0-2) PatchMerging. forward: (N, H, W, C) → (stage output before the merging,
    input of the next stage)."""

    def __init__(self, blocks: Sequence[S3Block], dim: int, out_dim: Optional[int], with_cp: bool):
        super().__init__()
        self.with_cp = with_cp
        self.blocks = nn.ModuleList(blocks)
        self.downsample = PatchMerging(dim, out_dim) if out_dim else None

    def forward(self, x: torch.Tensor, downsample: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        layouts: dict = {}
        for block in self.blocks:
            x = run_maybe_checkpointed(block, x, layouts, enabled=self.with_cp)
        if self.downsample is None or not downsample:
            return x, x
        return x, self.downsample(x)


# ---------------------------------------------------------------------------------------------------
# backbone
# ---------------------------------------------------------------------------------------------------
def _per_block(value: Any, depths: Sequence[int], name: str) -> list[list]:
    """Official per-block nested list (or per-stage numbers, or one number) → exactly depth entries per
    stage (extra official entries ignored)."""
    if not isinstance(value, (list, tuple)):
        value = [value] * len(depths)
    if len(value) < len(depths):
        raise invalid_argument('S3', f'arch[{name!r}]', value, f'one entry per stage ({len(depths)} stages)')
    out = []
    for stage, (entry, depth) in enumerate(zip(value, depths)):
        if not isinstance(entry, (list, tuple)):
            entry = [entry] * depth
        if len(entry) < depth:
            raise invalid_argument('S3', f'arch[{name!r}]', value,
                                   f'a number or at least depths[{stage}]={depth} per-block entries per stage',
                                   f' (stage {stage} has {len(entry)})')
        out.append(list(entry[:depth]))
    return out


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    raise invalid_argument('S3', f'arch[{name!r}]', value, 'an integer or a pair of integers')


class S3(DenseBackbone):
    """S3 (AutoFormerV2) dense backbone: S3-T / S3-S / S3-B.

    Args:
        arch: 'tiny' | 'small' | 'base', or a dict of the official `SSSTransformer` arguments
            (`img_size`, `patch_size`, `embed_dim`, `depths`, `num_heads`, `window_size`, `mlp_ratio`,
            `qkv_bias`, `qk_scale`, `drop_rate`, `attn_drop_rate`, `drop_path_rate`, `patch_norm`, ...).
            `img_size` fixes the block windows and table sizes by the official clamping rule (see the
            module docstring); it does not restrict the input size.
        out_indices: stages to output (default: all four).
        out_norm: a LayerNorm `norm{i}` on each output (as mmdet's Swin); False gives the raw tokens.
        drop_path_rate: stochastic depth over all blocks (linear); None: the arch's (official 0.1).
        frozen_stages, norm_eval, with_cp, init_cfg: see `DenseBackbone`.

    `forward`: (N, 3, H, W), any H, W → tuple of (N, C_i, ceil(H/s_i), ceil(W/s_i)), s_i = p·2^i.
    """

    FAMILY = 's3'
    ZOO_PREFIX = 's3'
    DEFAULTS = dict(img_size=224, patch_size=4, in_chans=3, num_classes=1000, embed_dim=[96, 192, 384, 768],
                    depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=[7, 7, 7, 7],
                    mlp_ratio=[4.0, 4.0, 4.0, 4.0], qkv_bias=True, qk_scale=None, drop_rate=0.0,
                    attn_drop_rate=0.0, drop_path_rate=0.1, ape=False, patch_norm=True, use_checkpoint=False)
    ARCHS: dict = {}  # filled below the class (variant table)
    IGNORED_CHECKPOINT_KEYS = (r'^head\.', r'^norm\.')
    OPTIONAL_MODEL_KEYS = (r'^norm\d+\.',)
    NUM_STAGES = 4
    _PER_BLOCK_INT = Each(Each(POSITIVE_INT, scalar_ok=True), scalar_ok=True)
    ARG_RULES = dict(img_size=Each(POSITIVE_INT, scalar_ok=True), embed_dim=Each(POSITIVE_INT, scalar_ok=True),
                     num_heads=_PER_BLOCK_INT, window_size=_PER_BLOCK_INT,
                     mlp_ratio=Each(Each(POSITIVE, scalar_ok=True), scalar_ok=True), qk_scale=POSITIVE,
                     head_dim=Each(POSITIVE_INT, scalar_ok=True))

    def __init__(self, arch: str | dict = 'tiny', *, out_indices: Optional[Sequence[int]] = None,
                 out_norm: bool = True, drop_path_rate: Optional[float] = None, frozen_stages: int = -1,
                 norm_eval: bool = False, with_cp: bool = False, init_cfg: Optional[dict] = None,
                 head_dim: int | Sequence[int] = HEAD_DIM):
        cfg = self.resolve_arch(arch)
        depths = [int(d) for d in cfg['depths']]
        num_stages = len(depths)
        out_indices = tuple(range(num_stages)) if out_indices is None else tuple(out_indices)
        if cfg['ape']:
            raise invalid_argument('S3', "arch['ape']", cfg['ape'], 'False',
                                   fix='The official constructor raises TypeError for ape=True and no released '
                                       'model uses it')
        dims = cfg['embed_dim']
        dims = [int(dims) * 2 ** i for i in range(num_stages)] if isinstance(dims, int) else [int(d) for d in dims]
        if len(dims) != num_stages:
            raise invalid_argument('S3', "arch['embed_dim']", cfg['embed_dim'],
                                   f'one width per stage ({num_stages} stages) or one number')
        heads = _per_block(cfg['num_heads'], depths, 'num_heads')
        windows = _per_block(cfg['window_size'], depths, 'window_size')
        ratios = _per_block(cfg['mlp_ratio'], depths, 'mlp_ratio')
        head_dims = [int(head_dim)] * num_stages if isinstance(head_dim, int) else [int(d) for d in head_dim]
        if len(head_dims) != num_stages:
            raise invalid_argument('S3', 'head_dim', head_dim, f'one number or one per stage ({num_stages})')
        for i, (dim, stage_heads) in enumerate(zip(dims, heads)):
            if any(dim != head_dims[i] * h for h in stage_heads):
                raise invalid_argument('S3', "arch['num_heads']", cfg['num_heads'],
                                       f'{head_dims[i]}·heads = width in every block (head dim fixed at '
                                       f'{head_dims[i]} as in the official code)', f' (stage {i} has width {dim})')
        if drop_path_rate is None:
            drop_path_rate = cfg['drop_path_rate']
        super().__init__(out_indices=out_indices, frozen_stages=frozen_stages, norm_eval=norm_eval,
                         with_cp=with_cp or bool(cfg['use_checkpoint']), init_cfg=init_cfg,
                         in_channels=cfg['in_chans'])
        self.arch_cfg = cfg
        self.out_norm = out_norm
        self.num_features = dims
        patch = int(cfg['patch_size'])
        img_h, img_w = _pair(cfg['img_size'], 'img_size')
        self.patch_embed = PatchEmbed(cfg['in_chans'], dims[0], patch, with_norm=cfg['patch_norm'])
        self.pos_drop = nn.Dropout(cfg['drop_rate'])
        schedule = drop_path_schedule(drop_path_rate, depths)
        self.block_windows: list[list[int]] = []   # per stage, per block: window at `img_size` (table size)
        self.layers = nn.ModuleList()
        for i in range(num_stages):
            map_hw = (img_h // patch // 2 ** i, img_w // patch // 2 ** i)
            if min(map_hw) < 1:
                raise invalid_argument('S3', "arch['img_size']", cfg['img_size'],
                                       f'a size whose stage maps are not empty at patch_size {patch}',
                                       f' (stage {i} map {map_hw})')
            stage_windows = [window_layout(*map_hw, int(wnd), 0)[0] for wnd in windows[i]]
            self.block_windows.append(stage_windows)
            blocks = [S3Block(dims[i], int(heads[i][j]), stage_windows[j], stage_windows[j] // 2 if j % 2 else 0,
                              float(ratios[i][j]), cfg['qkv_bias'], cfg['qk_scale'], cfg['drop_rate'],
                              cfg['attn_drop_rate'], schedule[i][j], head_dims[i])
                      for j in range(depths[i])]
            out_dim = dims[i + 1] if i < num_stages - 1 else None
            self.layers.append(S3Stage(blocks, dims[i], out_dim, self.with_cp))
        if out_norm:
            for i in out_indices:
                self.add_module(f'norm{i}', nn.LayerNorm(dims[i]))
        self._feature_info = [dict(channels=dims[i], stride=patch * 2 ** i, index=i) for i in out_indices]
        self.reset_parameters_official()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(N, 3, H, W) → tuple of (N, C_i, h_i, w_i) for i in `out_indices`."""
        self.check_input(x)
        x = self.pos_drop(self.patch_embed(x))
        outs = []
        last = max(self.out_indices)
        for i, stage in enumerate(self.layers):
            stage_out, x = stage(x, downsample=i < last)
            if i in self.out_indices:
                if self.out_norm:
                    stage_out = getattr(self, f'norm{i}')(stage_out)
                outs.append(stage_out.permute(0, 3, 1, 2).contiguous())
            if i == last:
                break
        return tuple(outs)

    def stage_modules(self, stage: int) -> list[nn.Module]:
        """-1: patch embedding. i: stage i's blocks, the PatchMerging into it (i > 0), its output norm."""
        return self._pyramid_stage_modules(stage, 'norm{}')

    def slimming_spec(self) -> dict[str, Any]:
        """Channel groups for `slimmable=` (see `backbones.slimming`): one free count per stage (a
        multiple of its heads; a narrow arch lists `embed_dim` per stage), MLP
        hidden int(C·ratio) per block, q/k/v and the projection input per head, PatchMerging's LN and
        reduction input as four neighbours' channels. A narrow model has head dim C/heads (`head_dim`, per stage);
        its softmax scale stays the official 32^-½."""
        cfg, dims = self.arch_cfg, self.num_features
        groups: dict[str, dict] = {}
        tensors: dict[str, Any] = {'patch_embed.proj': ('s0', None)}
        if self.patch_embed.norm is not None:
            tensors['patch_embed.norm'] = 's0'
        ratios = _per_block(cfg['mlp_ratio'], [len(stage.blocks) for stage in self.layers], 'mlp_ratio')
        for i, stage in enumerate(self.layers):
            s, heads = f's{i}', stage.blocks[0].attn.num_heads
            groups[s] = dict(channels=dims[i], multiple=heads, arch=[('embed_dim', i)])
            groups[s + '.h'] = dict(of=s, heads=heads)
            for j, block in enumerate(stage.blocks):
                p, mlp = f'layers.{i}.blocks.{j}.', f'{s}.mlp{float(ratios[i][j])}'
                groups.setdefault(mlp, dict(of=s, factor=float(ratios[i][j])))
                tensors.update({p + 'norm1': s, p + 'attn.qkv': ([s + '.h'] * 3, s), p + 'attn.proj': (s, s + '.h'),
                                p + 'norm2': s, p + 'mlp.fc1': (mlp, s), p + 'mlp.fc2': (s, mlp)})
            if stage.downsample is not None:
                tensors[f'layers.{i}.downsample.norm'] = ([s] * 4,)
                tensors[f'layers.{i}.downsample.reduction'] = (f's{i + 1}', [s] * 4)
        if self.out_norm:
            tensors.update({f'norm{i}': f's{i}' for i in self.out_indices})
        return dict(groups=groups, tensors=tensors, head_dim_key=('kwargs', 'head_dim'),
                    outputs=[f's{i}' for i in self.out_indices],
                    depths=[dict(blocks=f'layers.{i}.blocks', arch=('depths', i)) for i in range(len(self.layers))])

    def reset_parameters_official(self) -> None:
        """Official init: Linear trunc_normal(.02) / bias 0, LayerNorm 1/0, tables trunc_normal(.02),
        the stem conv PyTorch's default."""
        for m in self.modules():
            if init_linear_or_layernorm(m):
                continue
            if isinstance(m, nn.Conv2d):
                m.reset_parameters()
            elif isinstance(m, WindowAttention):
                nn.init.trunc_normal_(m.relative_position_bias_table, std=0.02)

    @classmethod
    def micro_arch(cls, arch: str) -> dict[str, Any]:
        """Widths 32/32/32/64 (one or two heads of 32), two blocks per stage (a shifted one in each), the
        variant's windows and img_size (so the same table sizes and clamping)."""
        cfg = cls.resolve_arch(arch)
        depths = [2, 2, 2, 2]
        windows = [stage[0] for stage in _per_block(cfg['window_size'], cfg['depths'], 'window_size')]
        return dict(cfg, embed_dim=[32, 32, 32, 64], depths=depths, num_heads=[1, 1, 1, 2],
                    window_size=windows, mlp_ratio=[2.0, 2.0, 2.0, 2.0])

    def adapt_state_dict(self, state_dict: dict[str, torch.Tensor]) -> tuple[dict, list[str]]:
        """Relative position tables of another window are resized to this model's (bicubic,
        align_corners=False, as mmdet's/mmseg's Swin loaders do)."""
        return resize_relative_position_tables(state_dict, self.state_dict(), mode='bicubic')


# ---------------------------------------------------------------------------------------------------
# variant table (official configs AutoFormerV2/configs/S3-*.yaml, as evaluation.py builds them)
# ---------------------------------------------------------------------------------------------------
def _s3_arch(listed: Sequence[int], depths: Sequence[int], windows: Sequence[int]) -> dict[str, Any]:
    """The yaml's per-block lists (`listed` entries per stage; S3-T lists 8 for its 6 stage-2 blocks)."""
    return dict(embed_dim=[96, 192, 384, 768], depths=list(depths),
                num_heads=[[h] * n for h, n in zip((3, 6, 12, 24), listed)],
                window_size=[[w] * n for w, n in zip(windows, listed)],
                mlp_ratio=[[4.0] * n for n in listed])


S3.ARCHS = {
    'tiny': _s3_arch((2, 2, 8, 2), (2, 2, 6, 2), (7, 7, 14, 7)),
    'small': _s3_arch((2, 2, 18, 2), (2, 2, 18, 2), (14, 14, 14, 14)),
    'base': _s3_arch((2, 2, 30, 2), (2, 2, 30, 2), (7, 7, 14, 7)),
}
register_backbone(S3)     # after the table: registration requires a non-empty ARCHS


# ---------------------------------------------------------------------------------------------------
# checkpoint conversion
# ---------------------------------------------------------------------------------------------------
_BLOCK_KEY = re.compile(r'^layers\.\d+\.blocks\.\d+\.(norm[12]\.|attn\.(qkv|proj)\.|mlp\.fc[12]\.|'
                        r'attn\.relative_position_(bias_table|index)$|attn_mask$)')
_OTHER_KEY = re.compile(r'^(patch_embed\.(proj|norm)\.|layers\.\d+\.downsample\.(norm|reduction)\.|norm\d*\.|'
                        r'head\.(fc\.)?(weight|bias)$)')
_DERIVED = re.compile(r'(relative_position_index|attn_mask)$')


_MMDET_RENAMES = (
    (re.compile(r'^patch_embed\.projection\.'), 'patch_embed.proj.'),
    (re.compile(r'^stages\.(\d+)\.'), r'layers.\1.'),
    (re.compile(r'\.attn\.w_msa\.'), '.attn.'),
    (re.compile(r'\.ffn\.layers\.0\.0\.'), '.mlp.fc1.'),
    (re.compile(r'\.ffn\.layers\.1\.'), '.mlp.fc2.'),
)


def _from_mmdet_swin(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mmdet/mmseg `SwinTransformer` layout (a Swin-trained S3, or Swin weights for an S3 of window 7) → the
    official one. Their PatchMerging flattens 2×2 neighbourhoods with nn.Unfold (channel-major: c·4 + 2·dy +
    dx); the official concatenation is neighbour-major ((2·dx + dy)·C + c): reduction columns and norm entries
    are permuted accordingly (the inverse of mmdet's `swin_converter`)."""
    out = {}
    for key, value in state_dict.items():
        for pattern, repl in _MMDET_RENAMES:
            key = pattern.sub(repl, key)
        if re.search(r'\.downsample\.(reduction\.weight|norm\.(weight|bias))$', key):
            c = value.shape[-1] // 4
            value = value.reshape(*value.shape[:-1], c, 2, 2).transpose(-3, -1)
            value = value.reshape(*value.shape[:-3], 4 * c)   # (dx, dy, c) → index (2·dx + dy)·C + c
        out[key] = value
    return out


@register_converter('s3')
def convert_s3(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official (`SSSTransformer`, with or without its buffers), timm `swin_s3_*` / HF-hub timm safetensors,
    mmdet/mmseg `SwinTransformer`, or our layout → ours (= the official names, plus dense `norm{i}`).

    timm: `layers.{i}.downsample.*` (merging at the start of stage i) → `layers.{i-1}.downsample.*`,
    `head.fc.*` → `head.*`. mmdet/mmseg: see `_from_mmdet_swin`. Derived buffers (`relative_position_index`,
    `attn_mask`) are dropped; the classification `norm.*`/`head.*` are kept (the loader ignores them)."""
    if 'patch_embed.projection.weight' in state_dict:
        state_dict = _from_mmdet_swin(state_dict)
    keys = list(state_dict)
    unknown = [k for k in keys if not (_BLOCK_KEY.match(k) or _OTHER_KEY.match(k))]
    if 'patch_embed.proj.weight' not in state_dict or unknown:
        raise CheckpointError(f'not an S3 checkpoint: {len(unknown)} unrecognised keys, e.g. '
                              f'{unknown[:5] or keys[:5]}; expected the official / timm / mmdet Swin-S3 keys '
                              '(patch_embed.proj, layers.N.blocks.M.attn.qkv, layers.N.downsample.reduction, ...)')
    merging_stages = {int(m.group(1)) for k in keys if (m := re.match(r'^layers\.(\d+)\.downsample\.', k))}
    timm = (bool(merging_stages) and 0 not in merging_stages) or any(k.startswith('head.fc.') for k in keys)
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if _DERIVED.search(key):
            continue
        if timm:
            key = re.sub(r'^layers\.(\d+)\.downsample\.', lambda m: f'layers.{int(m.group(1)) - 1}.downsample.', key)
            key = re.sub(r'^head\.fc\.', 'head.', key)
        out[key] = value
    return out
