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

import re
from typing import Any, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._base import (POSITIVE, POSITIVE_INT, DenseBackbone, Each, invalid_argument, register_backbone,
                    register_converter)
from ._layers import (Mlp, PatchEmbed, add_residual, drop_path_or_identity, drop_path_schedule,
                      init_linear_or_layernorm, linear, relative_position_index, resize_relative_position_tables,
                      run_maybe_checkpointed)
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
    right/bottom to multiples of it, rolled by -`shift`, with the additive `mask` (`attention_mask`)."""
    height: int
    width: int
    window: int
    shift: int
    mask: Optional[torch.Tensor]


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
    """Multi-head self-attention within windows, head dim 32, Swin relative position bias.

    (B·nW, w², C) windows → (B·nW, w², C). The table covers windows up to `window_size`; a smaller
    window uses its centre rows. `mask` (nW, w², w²) is added after the bias, per window."""

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

    def position_bias(self, window: int) -> torch.Tensor:
        """(heads, window², window²) relative position bias for a window of side `window`."""
        if window == self.window_size:
            index = self.relative_position_index
        else:
            index = relative_position_index(window, self.window_size).to(self.relative_position_index.device)
        n = window * window
        return self.relative_position_bias_table[index.reshape(-1)].view(n, n, -1).permute(2, 0, 1)

    def forward(self, windows: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
        b, n, c = windows.shape
        qkv = linear(self.qkv, windows).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)                                           # each B·nW, heads, N, 32
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn + self.position_bias(layout.window).unsqueeze(0)
        if layout.mask is not None:
            nw = layout.mask.shape[0]
            attn = attn.view(b // nw, nw, self.num_heads, n, n) + layout.mask[None, :, None]
            attn = attn.view(b, self.num_heads, n, n)
        attn = self.attn_drop(attn.softmax(-1)).to(v.dtype)
        out = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(linear(self.proj, out))


class S3Block(nn.Module):
    """x + DropPath(W-MSA(LN(x))) then x + DropPath(MLP(LN(x))); (N, H, W, C) → (N, H, W, C).

    `window_size` / `shift_size`: the block's window and shift (`window_layout` adapts them to the map).
    `mixer_tap` sees norm1's output after padding (N, Hp, Wp, C), `mlp_tap` norm2's output."""

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
        """This block's `WindowLayout` on a height×width map (`cache`: shared by the blocks of a stage)."""
        window, shift = window_layout(height, width, self.window_size, self.shift_size)
        key = (height, width, window, shift)
        if cache is not None and key in cache:
            return cache[key]
        layout = WindowLayout(height, width, window, shift, attention_mask(height, width, window, shift, device))
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
        """(N, H, W, C) → (N, H, W, C): norm1, padding, `mixer_tap`, shifted window attention, crop."""
        n, h, w, _ = x.shape
        window, shift = layout.window, layout.shift
        y = self.norm1(x)
        pad_h, pad_w = (-h) % window, (-w) % window
        if pad_h or pad_w:
            y = F.pad(y, (0, 0, 0, pad_w, 0, pad_h))
        y = self.mixer_tap(y)
        hp, wp = h + pad_h, w + pad_w
        if shift:
            y = torch.roll(y, (-shift, -shift), (1, 2))
        y = _reverse(self.attn(_partition(y, window), layout), window, n, hp, wp)
        if shift:
            y = torch.roll(y, (shift, shift), (1, 2))
        if pad_h or pad_w:
            y = y[:, :h, :w].contiguous()
        return y


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
