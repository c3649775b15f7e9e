"""Attention locality: Mean Attention Distance (MAD) and normalized entropy per layer and head.

After Toledo & Martínez, "Inducing Spatial Locality in Vision Transformers through the Training
Protocol": every head is characterised by

* **MAD**: the attention-weighted mean distance between a query token and the keys it attends to,
  averaged over the (real) query tokens of an image. Units: **input pixels** (`mad_px`; token centres
  sit at (i + ½)·stride pixels, Twins GSA keys at the centres of their pooled sr×sr regions) and
  **fraction of the input image diagonal** (`mad_norm` = mad_px / √(H² + W²) of the image fed to the
  model, after resizing).
* **normalized entropy**: −Σ p log p / log(n_keys) of each query's attention distribution, n_keys =
  the number of real keys that query may attend (window size, pooled keys), averaged over queries;
  0 = one-hot, 1 = uniform.

Padded tokens (Twins LSA and S3 right/bottom padding, HRFormer centred window padding) are excluded from
both statistics: they are never queries, and when the model lets a query attend them (HRFormer with
`pad_mask=False`, the official behaviour) the probabilities are renormalised over real keys and the
lost mass is reported as `pad_mass`.

Capture uses forward hooks on the attention modules that RECOMPUTE the probabilities from the
module's inputs and weights (`q`/`kv`/`qkv`, `sr`/`norm`, `num_heads`, `scale`, `window_size`,
`sr_ratio`, relative position bias), so the model's own code path is unchanged. Memory is bounded:
queries (GSA) or windows (LSA, HRFormer) are processed in chunks and only per-image, per-head sums are
kept — never a full attention map.

FocalNet has no attention. For its focal modulation layers we report the **effective focal extent**:
the gate-weighted mean distance of the context each level aggregates — level l sees a square of
1 + Σ_{i≤l}(k_i − 1) tokens (the stacked depthwise kernels), scored by the mean distance of uniform
attention over that square around each token, clipped at the map border; the global level by the mean
distance over all token pairs of the map — weighted per token by |gate_l| / Σ|gate|. It is chosen over the gradient-based effective
receptive field because it is read off one forward pass with the same hooks and bounded memory, and
it measures exactly the quantity the gates learn (how far each token looks); it ignores the shape of
the learned kernels, so it is an upper-bound-style proxy, not an attention distance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ._layers import relative_position_bias

__all__ = ['AttentionChunk', 'LayerInfo', 'AttentionLocality', 'chunk_statistics', 'centred_window_distance',
           'mean_grid_distance', 'find_attention_layers', 'summarize']


# ---------------------------------------------------------------------------------------------------
# closed forms
# ---------------------------------------------------------------------------------------------------
def centred_window_distance(k: int) -> float:
    """Mean Euclidean distance (tokens) from the centre of a k×k square of token centres to its tokens."""
    offsets = torch.arange(k, dtype=torch.float64) - (k - 1) / 2
    return float(torch.sqrt(offsets[:, None] ** 2 + offsets[None, :] ** 2).mean())


def mean_grid_distance(h: int, w: int, radius: Optional[int] = None) -> float:
    """Mean Euclidean distance (tokens) over all ordered (query, key) pairs of an h×w token grid, or only
    the pairs with |Δrow|, |Δcol| <= `radius` (a (2r+1)² square around each query, clipped at the border)."""
    r_h = h - 1 if radius is None else min(radius, h - 1)
    r_w = w - 1 if radius is None else min(radius, w - 1)
    dy = torch.arange(-r_h, r_h + 1, dtype=torch.float64)
    dx = torch.arange(-r_w, r_w + 1, dtype=torch.float64)
    count = (h - dy.abs())[:, None] * (w - dx.abs())[None, :]
    dist = torch.sqrt(dy[:, None] ** 2 + dx[None, :] ** 2)
    return float((count * dist).sum() / count.sum())


# ---------------------------------------------------------------------------------------------------
# attention chunks and their statistics
# ---------------------------------------------------------------------------------------------------
@dataclass
class AttentionChunk:
    """A slice of one layer's attention. G = groups (windows; 1 for global attention).

    probs (N, G, heads, Lq, Lk); values (N, G, heads, Lk, head_dim) or None; q_pos (G, Lq, 2) and
    k_pos (G, Lk, 2) token-centre coordinates (row, col) in token units of the layer's grid;
    q_valid (G, Lq) / k_valid (G, Lk) bool, True = real (unpadded) token, None = all real.
    """
    probs: torch.Tensor
    q_pos: torch.Tensor
    k_pos: torch.Tensor
    values: Optional[torch.Tensor] = None
    q_valid: Optional[torch.Tensor] = None
    k_valid: Optional[torch.Tensor] = None


def chunk_statistics(chunk: AttentionChunk, stride: float = 1.0) -> dict[str, torch.Tensor]:
    """Sums over the chunk's real queries, per image and head: `mad` (pixels = tokens·stride),
    `entropy` (normalized), `pad_mass`, each (N, heads) float64, plus `count` (real queries, scalar)."""
    p = chunk.probs.double()
    n, g, heads, lq, lk = p.shape
    if chunk.k_valid is not None:
        real = chunk.k_valid[None, :, None, None, :].to(p.dtype)
        p = p * real
        mass = p.sum(-1, keepdim=True)
        pad_mass = 1.0 - mass.squeeze(-1)
        p = p / mass.clamp_min(1e-300)
        n_keys = chunk.k_valid.sum(-1).to(p.dtype)                        # G
    else:
        pad_mass = torch.zeros(p.shape[:-1], dtype=p.dtype, device=p.device)
        n_keys = torch.full((g,), float(lk), dtype=p.dtype, device=p.device)
    dist = torch.cdist(chunk.q_pos.double(), chunk.k_pos.double()) * stride   # G, Lq, Lk
    mad = (p * dist[None, :, None]).sum(-1)                                  # N, G, heads, Lq
    entropy = -torch.special.xlogy(p, p).sum(-1)
    log_n = torch.log(n_keys.clamp_min(1.0))
    entropy = torch.where(n_keys[None, :, None, None] > 1, entropy / log_n.clamp_min(1e-300)[None, :, None, None],
                          torch.zeros_like(entropy))
    weight = (torch.ones(g, lq, dtype=p.dtype, device=p.device) if chunk.q_valid is None
              else chunk.q_valid.to(p.dtype))[None, :, None, :]
    return dict(mad=(mad * weight).sum((1, 3)), entropy=(entropy * weight).sum((1, 3)),
                pad_mass=(pad_mass * weight).sum((1, 3)), count=weight.sum())


def _grid_centres(h: int, w: int, step: float = 1.0, device=None) -> torch.Tensor:
    """(h*w, 2) centres (row, col) of an h×w grid of cells of `step` tokens, row-major."""
    rows = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * step
    cols = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * step
    return torch.stack(torch.meshgrid(rows, cols, indexing='ij'), -1).reshape(-1, 2)


def _windows(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(N, Hp, Wp, ...) → (N, nW, ws*ws, ...), windows and tokens row-major."""
    n, hp, wp = x.shape[:3]
    x = x.reshape(n, hp // ws, ws, wp // ws, ws, *x.shape[3:]).transpose(2, 3)
    return x.reshape(n, (hp // ws) * (wp // ws), ws * ws, *x.shape[5:])


def _unwindows(x: torch.Tensor, hp: int, wp: int, ws: int) -> torch.Tensor:
    """(N, nW, ws*ws, C) → (N, Hp, Wp, C)."""
    n, c = x.shape[0], x.shape[-1]
    x = x.reshape(n, hp // ws, wp // ws, ws, ws, c).transpose(2, 3)
    return x.reshape(n, hp, wp, c)


# ---------------------------------------------------------------------------------------------------
# recomputation, one reader per attention kind (generators: yield chunks, return the module output
# rebuilt from probabilities @ v → proj when `collect` is set, else None)
# ---------------------------------------------------------------------------------------------------
def _gsa_chunks(mod: nn.Module, x: torch.Tensor, hw: tuple[int, int], chunk: int,
                collect: bool) -> Iterator[AttentionChunk]:
    """Twins GlobalSubsampledAttention: x (N, H*W, C); keys are sr×sr pooled regions (conv, floor)."""
    n, length, c = x.shape
    heads = mod.num_heads
    hd = c // heads
    scale = mod.scale if mod.scale is not None else hd ** -0.5
    h, w = hw
    q = mod.q(x).reshape(n, length, heads, hd).transpose(1, 2)                # N, heads, L, hd
    source, (hk, wk), step = x, (h, w), 1
    if mod.sr_ratio > 1:
        pooled = mod.sr(x.transpose(1, 2).reshape(n, c, h, w))
        hk, wk, step = pooled.shape[2], pooled.shape[3], mod.sr_ratio
        source = mod.norm(pooled.flatten(2).transpose(1, 2))
    k, v = mod.kv(source).reshape(n, -1, 2, heads, hd).permute(2, 0, 3, 1, 4)  # each N, heads, Lk, hd
    q_pos_all = _grid_centres(h, w, device=x.device)
    k_pos = _grid_centres(hk, wk, step, device=x.device)[None]
    outs = []
    for start in range(0, length, chunk):
        qc = q[:, :, start:start + chunk]
        probs = torch.softmax((qc @ k.transpose(-2, -1)) * scale, -1)
        yield AttentionChunk(probs[:, None], q_pos_all[None, start:start + chunk], k_pos, v[:, None])
        if collect:
            outs.append(probs @ v)
    if not collect:
        return None
    out = torch.cat(outs, 2).transpose(1, 2).reshape(n, length, c)
    return mod.proj(out)


def _lsa_chunks(mod: nn.Module, x: torch.Tensor, hw: tuple[int, int], chunk: int,
                collect: bool) -> Iterator[AttentionChunk]:
    """Twins LocallyGroupedAttention: x (N, H*W, C), right/bottom zero padding, padded keys masked."""
    n, length, c = x.shape
    h, w = hw
    ws = mod.window_size
    heads = mod.num_heads
    hd = c // heads
    scale = mod.scale if mod.scale is not None else hd ** -0.5
    hp, wp = h + (-h) % ws, w + (-w) % ws
    xp = F.pad(x.reshape(n, h, w, c), (0, 0, 0, wp - w, 0, hp - h))
    valid = torch.zeros(1, hp, wp, dtype=torch.bool, device=x.device)
    valid[:, :h, :w] = True
    valid = _windows(valid, ws)[0]                                            # nW, ws²
    pos = _windows(_grid_centres(hp, wp, device=x.device).reshape(1, hp, wp, 2), ws)[0]   # nW, ws², 2
    windows = _windows(xp, ws)                                                # N, nW, ws², C
    chunk = max(1, chunk // (ws * ws))                                        # queries → windows per step
    outs = []
    for start in range(0, windows.shape[1], chunk):
        qkv = mod.qkv(windows[:, start:start + chunk])
        g = qkv.shape[1]
        q, k, v = qkv.reshape(n, g, ws * ws, 3, heads, hd).permute(3, 0, 1, 4, 2, 5)   # N, g, heads, L, hd
        logits = (q @ k.transpose(-2, -1)) * scale
        kv_valid = valid[start:start + g]
        logits = logits.masked_fill(~kv_valid[None, :, None, None, :], float('-inf'))
        probs = torch.softmax(logits, -1)
        p_chunk = pos[start:start + g]
        yield AttentionChunk(probs, p_chunk, p_chunk, v, kv_valid, kv_valid)
        if collect:
            outs.append((probs @ v).transpose(2, 3).reshape(n, g, ws * ws, c))
    if not collect:
        return None
    out = _unwindows(torch.cat(outs, 1), hp, wp, ws)[:, :h, :w].reshape(n, length, c)
    return mod.proj(out)


def _hrformer_chunks(mod: nn.Module, x: torch.Tensor, chunk: int,
                     collect: bool) -> Iterator[AttentionChunk]:
    """HRFormer WindowAttention: x (N, H, W, C), centred zero padding, optional RPE and pad mask."""
    n, h, w, c = x.shape
    ws = mod.window_size
    heads = mod.num_heads
    hd = c // heads
    pad_h, pad_w = (-h) % ws, (-w) % ws
    top, left = pad_h // 2, pad_w // 2
    hp, wp = h + pad_h, w + pad_w
    xp = F.pad(x, (0, 0, left, pad_w - left, top, pad_h - top))
    valid = torch.zeros(1, hp, wp, dtype=torch.bool, device=x.device)
    valid[:, top:top + h, left:left + w] = True
    valid = _windows(valid, ws)[0]
    pos = _windows(_grid_centres(hp, wp, device=x.device).reshape(1, hp, wp, 2), ws)[0]
    pos = pos - torch.tensor([top, left], dtype=pos.dtype, device=pos.device)   # image token coordinates
    bias = None
    if mod.with_rpe:
        bias = relative_position_bias(mod.relative_position_bias_table, mod.relative_position_index)
        bias = bias.to(x.dtype)                                                 # heads, L, L
    windows = _windows(xp, ws)
    chunk = max(1, chunk // (ws * ws))                                        # queries → windows per step
    outs = []
    for start in range(0, windows.shape[1], chunk):
        qkv = mod.qkv(windows[:, start:start + chunk])
        g = qkv.shape[1]
        q, k, v = qkv.reshape(n, g, ws * ws, 3, heads, hd).permute(3, 0, 1, 4, 2, 5)
        logits = (q @ k.transpose(-2, -1)) * hd ** -0.5
        if bias is not None:
            logits = logits + bias
        kv_valid = valid[start:start + g]
        if mod.pad_mask:
            logits = logits.masked_fill(~kv_valid[None, :, None, None, :], float('-inf'))
        probs = torch.softmax(logits, -1)
        p_chunk = pos[start:start + g]
        yield AttentionChunk(probs, p_chunk, p_chunk, v, kv_valid, kv_valid)
        if collect:
            outs.append((probs @ v).transpose(2, 3).reshape(n, g, ws * ws, c))
    if not collect:
        return None
    out = mod.proj(torch.cat(outs, 1))
    return _unwindows(out, hp, wp, ws)[:, top:top + h, left:left + w]


def _s3_chunks(mod: nn.Module, x: torch.Tensor, layout: Any, chunk: int,
               collect: bool) -> Iterator[AttentionChunk]:
    """S3 WindowAttention: x (N, H, W, C), windows of the map padded right/bottom and rolled by -shift
    (`layout`: backbones.s3.WindowLayout); relative position bias, shift-region and padded-key mask."""
    from .s3 import _partition, _reverse, pad_roll, unroll_crop
    h, w, ws, shift, _ = layout
    mask = layout.window_mask(x.device)
    hp, wp = h + (-h) % ws, w + (-w) % ws
    n_win = (hp // ws) * (wp // ws)
    n, c = x.shape[0], x.shape[-1]
    windows = _partition(pad_roll(x, hp, wp, shift), ws)
    heads = mod.num_heads
    valid = torch.zeros(1, hp, wp, dtype=torch.bool, device=windows.device)
    valid[:, :h, :w] = True
    pos = _grid_centres(hp, wp, device=windows.device).reshape(1, hp, wp, 2)   # unrolled image coordinates
    if shift:
        valid, pos = valid.roll((-shift, -shift), (1, 2)), pos.roll((-shift, -shift), (1, 2))
    valid, pos = _windows(valid, ws)[0], _windows(pos, ws)[0]                  # nW, w² (, 2)
    bias = mod.position_bias(ws).to(windows.dtype)                            # heads, L, L
    windows = windows.reshape(n, n_win, ws * ws, c)
    chunk = max(1, chunk // (ws * ws))                                        # queries → windows per step
    outs = []
    for start in range(0, n_win, chunk):
        qkv = mod.qkv(windows[:, start:start + chunk])
        g = qkv.shape[1]
        q, k, v = qkv.reshape(n, g, ws * ws, 3, heads, -1).permute(3, 0, 1, 4, 2, 5)   # N, g, heads, L, 32
        logits = (q * mod.scale) @ k.transpose(-2, -1) + bias
        if mask is not None:
            logits = logits + mask[None, start:start + g, None].to(logits.dtype)
        probs = torch.softmax(logits, -1)
        kv_valid = valid[start:start + g]
        p_chunk = pos[start:start + g]
        yield AttentionChunk(probs, p_chunk, p_chunk, v, kv_valid, kv_valid)
        if collect:
            outs.append((probs @ v).transpose(2, 3).reshape(n, g, ws * ws, -1))
    if not collect:
        return None
    out = _reverse(torch.cat(outs, 1).reshape(n * n_win, ws * ws, -1), ws, n, hp, wp)
    return mod.proj(unroll_crop(out, h, w, shift))


# ---------------------------------------------------------------------------------------------------
# layers of a model
# ---------------------------------------------------------------------------------------------------
@dataclass
class LayerInfo:
    """One analysed layer: `kind` in {'gsa', 'lsa', 'window', 's3-window', 'focal'}; `stride` in input pixels per
    token; `heads` (attention heads, or focal levels + 1 for 'focal')."""
    name: str
    kind: str
    stride: int
    heads: int
    module: nn.Module = field(repr=False)
    window: Optional[int] = None
    sr_ratio: Optional[int] = None


def _twins_stride(model: nn.Module, stage: int) -> int:
    stride = 1
    for embed in list(model.patch_embeds)[:stage + 1]:
        stride *= embed.proj.stride[0]
    return stride


def find_attention_layers(model: nn.Module) -> list[LayerInfo]:
    """Every attention (or focal modulation) layer of a zoo backbone, in module order."""
    from .focalnet import FocalModulation
    from .hrformer import WindowAttention
    from .s3 import WindowAttention as S3WindowAttention
    from .twins import GlobalSubsampledAttention, LocallyGroupedAttention
    layers = []
    for name, mod in model.named_modules():
        parts = name.split('.')
        if isinstance(mod, GlobalSubsampledAttention):
            layers.append(LayerInfo(name, 'gsa', _twins_stride(model, int(parts[1])), mod.num_heads, mod,
                                    sr_ratio=mod.sr_ratio))
        elif isinstance(mod, LocallyGroupedAttention):
            layers.append(LayerInfo(name, 'lsa', _twins_stride(model, int(parts[1])), mod.num_heads, mod,
                                    window=mod.window_size))
        elif isinstance(mod, WindowAttention):
            stem = model.conv1.stride[0] * model.conv2.stride[0]
            branch = int(parts[parts.index('branches') + 1])
            layers.append(LayerInfo(name, 'window', stem * 2 ** branch, mod.num_heads, mod,
                                    window=mod.window_size))
        elif isinstance(mod, S3WindowAttention):
            stride = model.patch_embed.patch_size * 2 ** int(parts[1])
            layers.append(LayerInfo(name, 's3-window', stride, mod.num_heads, mod, window=mod.window_size))
        elif isinstance(mod, FocalModulation):
            layers.append(LayerInfo(name, 'focal', _focalnet_stride(model, int(parts[1])), mod.focal_level + 1,
                                    mod))
    return layers


def _focalnet_stride(model: nn.Module, stage: int) -> int:
    """Patch-embedding stride product up to `stage` (stem + the downsamples of earlier stages)."""
    convs = [m for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and 'modulation' not in n
             and ('patch_embed' in n or 'downsample' in n)]
    stride = 1
    for conv in convs[:stage + 1]:
        stride *= conv.stride[0]
    return stride


# ---------------------------------------------------------------------------------------------------
# the collector
# ---------------------------------------------------------------------------------------------------
class AttentionLocality:
    """Hooks that measure MAD / normalized entropy of every attention layer of `model`.

    Use as a context manager; call `run(images)` per batch (N, 3, H, W); `records()` gives per-image
    values, `summarize(...)` per-head and per-layer tables. `verify=True` also rebuilds each module's
    output from the recomputed probabilities and stores the max abs difference in `max_output_error`.
    Memory: about `chunk` queries at a time (GSA: query rows; LSA/HRFormer: chunk // window² windows);
    per image only per-head scalars are kept.
    """

    def __init__(self, model: nn.Module, chunk: int = 1024, verify: bool = False):
        self.model = model
        self.chunk = chunk
        self.verify = verify
        self.layers = find_attention_layers(model)
        if not self.layers:
            raise ValueError(f'{type(model).__name__} has no attention or focal modulation layer to analyse')
        self.per_image: dict[str, list[dict[str, torch.Tensor]]] = {l.name: [] for l in self.layers}
        self.max_output_error: dict[str, float] = {}
        self._handles: list = []
        self._image_hw: Optional[tuple[int, int]] = None

    def __enter__(self) -> 'AttentionLocality':
        for layer in self.layers:
            self._handles.append(layer.module.register_forward_hook(self._hook(layer), with_kwargs=True))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @torch.no_grad()
    def run(self, images: torch.Tensor) -> None:
        """Forward one batch (N, 3, H, W) through the model (eval mode expected) and record it."""
        self._image_hw = (images.shape[2], images.shape[3])
        self.model(images)

    def _hook(self, layer: LayerInfo):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
            with torch.no_grad():
                x = args[0] if args else kwargs['x']
                if layer.kind == 'focal':
                    self._record(layer, self._focal_stats(layer, x))
                    return
                if layer.kind == 'window':
                    reader = _hrformer_chunks(module, x, self.chunk, self.verify)
                elif layer.kind == 's3-window':
                    reader = _s3_chunks(module, x, args[1] if len(args) > 1 else kwargs['layout'], self.chunk,
                                        self.verify)
                else:
                    hw = args[1] if len(args) > 1 else kwargs['hw']
                    fn = _gsa_chunks if layer.kind == 'gsa' else _lsa_chunks
                    reader = fn(module, x, tuple(hw), self.chunk, self.verify)
                totals: dict[str, torch.Tensor] = {}
                while True:
                    try:
                        chunk = next(reader)
                    except StopIteration as stop:
                        rebuilt = stop.value
                        break
                    for key, value in chunk_statistics(chunk, layer.stride).items():
                        totals[key] = totals[key] + value if key in totals else value
                if rebuilt is not None:
                    err = float((rebuilt - output).abs().max())
                    self.max_output_error[layer.name] = max(err, self.max_output_error.get(layer.name, 0.0))
                count = totals.pop('count')
                self._record(layer, {k: v / count for k, v in totals.items()})
        return hook

    def _focal_stats(self, layer: LayerInfo, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per image and level: gate share (mean |g_l| / Σ|g|), level extent (px), effective extent."""
        mod = layer.module
        n, h, w, c = x.shape
        gates = mod.f(x)[..., 2 * c:].abs().double()                          # N, H, W, L+1
        share = gates / gates.sum(-1, keepdim=True).clamp_min(1e-300)
        extents, radius = [], 0
        for k in mod.kernel_sizes:
            radius += (k - 1) // 2
            extents.append(mean_grid_distance(h, w, radius))   # receptive square, clipped at the border
        extents.append(mean_grid_distance(h, w))
        extent = torch.tensor(extents, dtype=torch.float64, device=x.device) * layer.stride
        effective = (share * extent).sum(-1).mean((1, 2))                     # N
        level_entropy = -torch.special.xlogy(share, share).sum(-1) / math.log(share.shape[-1])
        return dict(mad=extent.expand(n, -1).clone(), gate_share=share.mean((1, 2)),
                    effective_extent=effective, entropy=level_entropy.mean((1, 2))[:, None].expand(n, share.shape[-1]))

    def _record(self, layer: LayerInfo, stats: dict[str, torch.Tensor]) -> None:
        diagonal = math.hypot(*self._image_hw) if self._image_hw else float('nan')
        stats = {k: v.detach().cpu() for k, v in stats.items()}
        stats['mad_norm'] = stats['mad'] / diagonal
        for i in range(stats['mad'].shape[0]):
            self.per_image[layer.name].append({k: v[i] for k, v in stats.items()})

    def records(self) -> list[dict[str, Any]]:
        """Per-head rows: layer, depth (module order), kind, stride, head, mad_px/mad_norm/entropy
        (+ pad_mass; focal: gate_share, effective_extent_px) mean and std over images."""
        rows = []
        for depth, layer in enumerate(self.layers):
            images = self.per_image[layer.name]
            if not images:
                continue
            stacked = {k: torch.stack([im[k] for im in images]).double() for k in images[0]}
            for head in range(layer.heads):
                label: Any = head
                if layer.kind == 'focal':
                    label = f'level{head}' if head < layer.heads - 1 else 'global'
                row: dict[str, Any] = dict(layer=layer.name, depth=depth, kind=layer.kind, stride=layer.stride,
                                           head=label, images=len(images))
                for key, value in stacked.items():
                    column = value if value.dim() == 1 else value[:, head]
                    name = {'mad': 'mad_px', 'effective_extent': 'effective_extent_px'}.get(key, key)
                    row[f'{name}_mean'] = float(column.mean())
                    row[f'{name}_std'] = float(column.std(unbiased=False))
                rows.append(row)
        return rows


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per layer: min / mean / max over heads of mad_px_mean and mad_norm_mean, mean entropy."""
    layers: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        layers.setdefault(row['layer'], []).append(row)
    out = []
    for name, heads in layers.items():
        mads = [r['mad_px_mean'] for r in heads]
        norms = [r['mad_norm_mean'] for r in heads]
        summary = dict(layer=name, depth=heads[0]['depth'], kind=heads[0]['kind'], stride=heads[0]['stride'],
                       heads=len(heads), mad_px_min=min(mads), mad_px_mean=sum(mads) / len(mads),
                       mad_px_max=max(mads), mad_norm_mean=sum(norms) / len(norms),
                       entropy_mean=sum(r['entropy_mean'] for r in heads) / len(heads))
        if heads[0]['kind'] == 'focal':
            summary['effective_extent_px'] = heads[0]['effective_extent_px_mean']
        out.append(summary)
    return out
