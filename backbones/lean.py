"""Lean inference (`lean=True` on every constructor and `create_backbone`): exact, lower peak memory.

MCUFormer's runtime techniques on our CPU paths behind one keyword. In inference (no autograd, eval
mode, plain eager execution, no hook on the module or inside it, nothing installed in its taps) the
modules listed by `_lean_forwards()` (a table: module type → lean forward) run as follows; anything
else (training, autograd, autocast, `torch.compile`, tracing, ONNX export, hooks, adapters in taps,
slimmable widths) takes the default path.

* Blocks (S3, Twins, FocalNet pre-LN, HRFormer): the token mixer runs over bounded chunks with the
  block's LayerNorm fused into each chunk (LayerNorm is token-wise) and the residual added per chunk:
  window attention (S3 cells of the shifted-window grid as its default path attends them, Twins LSA,
  HRFormer centre-padded windows) over bands of window / cell rows, qkv computed per band, so the full
  qkv / attention tensors never exist; Twins GSA over chunks of queries, its sub-sampled keys/values
  from bands of rows; FocalNet's modulation over bands of rows (`f` per band, the focal levels as row
  streams, see below, the gated contexts accumulated in place into one context sum, the global context
  from per-band column sums, then a token-wise second pass). The MLP (or HRFormer's ConvFFN: 1×1 convs
  token-wise, the depth-wise 3×3 on a one-row halo kept aside) follows in chunks, added in place. The
  result is written into the block's input tensor (every block input is an intermediate of the
  backbone's own forward that nothing reads after the block; a non-contiguous input gets a new output
  instead), so a block holds its input and one chunk (FocalNet: also its query and context sum).
* Row streams (`_RowStream`): a convolution over bands of rows that keeps only the input rows its next
  output rows need (no row computed twice). HRFormer's stem, stage 1 and first transition run that way,
  so the stride-4 stage-1 map (256 channels, the largest activation, held by the default forward through
  every stage) never exists; so do FocalNet's focal levels.
* Twins PEG and patch embeddings run on canonically strided channels-last views (a batch of one of
  transposed tokens otherwise makes oneDNN reorder: twice the map in scratch, NCHW outputs).
* Other `Mlp`s run over chunks of tokens (`_lean_mlp_forward`).

Chunks are bounded by `chunk_bytes` (default 4 MiB; bands of rows at least MIN_BAND_ROWS). Each chunk
runs the default path's operators on a subset of windows / tokens / rows: outputs equal the default's up
to float rounding of GEMM blocking and of the global mean's summation order (tests/test_lean.py: ≤ 1e-5
relative at odd sizes, padded and shifted windows, tiny chunks; at 512² ≤ 1.3e-6).

Measured (512², batch 1, fp32, fresh process, fixed allocator; `benchmarks/memory_model.md`), activation
peak default → lean: FocalNet-T 54.1 → 24.0 MiB (0.44×), SVT-S 37.9 → 13.2 (0.35×), PCPVT-S 48.3 → 13.9
(0.29×), HRFormer-S 55.1 → 13.0 (0.24×), S3-T 77.2 → 28.9 (0.37×); the memory model predicts the lean
peaks within ±4 %. Latency, 1 thread, back to back: lean 0.99-1.14× the default's speed; 2 threads on an
idle machine (benchmark worker, best of 2 rounds): SVT-S 1.07×, PCPVT-S 1.26×, S3-T 1.16×, FocalNet-T 0.87×,
HRFormer-S 0.85× (more, smaller operators in the row streams; on a contended machine far slower). Not chunked:
FocalNet/S3 stems and patch merging, HRFormer's fusion; post-LN FocalNet blocks keep the default path.

    create_backbone('twins-pcpvt-small', lean=True)                  # 4 MiB chunks
    PCPVT(arch='small', lean=dict(chunk_bytes=1 << 20))
"""
from __future__ import annotations

import copy
import types
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ._base import DenseBackbone, register_mechanism
from ._layers import Mlp, conv_act, conv_norm, hooked, linear, plain_eager
from ._taps import TAP_NAMES, Tap

DEFAULT_CHUNK_BYTES = 4 << 20
MIN_BAND_ROWS = 8          # rows per band at least (halo recomputation stays small)


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


# ---------------------------------------------------------------------------------------------------
# shared pieces
# ---------------------------------------------------------------------------------------------------
def _lean_ok(block: nn.Module) -> bool:
    """Whether `block` may take its lean forward now: inference without autograd or autocast, eval mode,
    plain eager, no hook on it or inside it, no module installed in its taps."""
    if (torch.is_grad_enabled() or block.training or not plain_eager() or hooked(block)
            or torch.is_autocast_enabled('cpu') or torch.is_autocast_enabled('cuda')):
        return False
    return all(getattr(block, t).inner is None for t in TAP_NAMES if isinstance(getattr(block, t, None), Tap))


def _target(x: torch.Tensor) -> torch.Tensor:
    """Where a lean block writes its result: into its input `x` itself when that is a dense contiguous
    tensor (every block input is an intermediate of the backbone's own forward, read by nothing after
    the block), else a new contiguous tensor of the same shape."""
    if x.is_contiguous():
        return x
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


def _count(budget: int, unit_bytes: int, least: int = 1) -> int:
    """How many units of `unit_bytes` fit into `budget` (at least `least`)."""
    return max(least, budget // max(unit_bytes, 1))


def _residual_mlp_(tokens: torch.Tensor, norm: nn.Module, mlp: Mlp, budget: int,
                   gamma: Optional[torch.Tensor] = None) -> None:
    """tokens (T, C), owned: tokens += γ·mlp(norm(tokens)), over chunks of rows, in place."""
    rows = _count(budget, mlp.fc1.out_features * tokens.element_size())
    for start in range(0, tokens.shape[0], rows):
        part = tokens[start:start + rows]
        branch = mlp._forward(norm(part))
        part.add_(branch if gamma is None else gamma * branch)
        del branch


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


# ---------------------------------------------------------------------------------------------------
# S3: attention within cells (the default path's `cell_groups`) over bands of cell rows
# ---------------------------------------------------------------------------------------------------
def _cell_bands(h: int, window: int, shift: int, rows: int) -> list[tuple[int, int, list]]:
    """The cell rows of an h-row map (`s3._axis_runs`) in bands of about `rows` rows (at least one cell):
    (first row, end row, the band's row runs relative to its first row)."""
    from .s3 import _axis_runs
    cells = [(start + i * size, size) for start, size, count in _axis_runs(h, window, shift) for i in range(count)]
    bands, i = [], 0
    while i < len(cells):
        j = i + 1
        while j < len(cells) and cells[j][0] + cells[j][1] - cells[i][0] <= rows:
            j += 1
        top = cells[i][0]
        runs: list = []
        for start, size in cells[i:j]:
            if runs and runs[-1][1] == size:
                runs[-1][2] += 1
            else:
                runs.append([start - top, size, 1])
        bands.append((top, cells[j - 1][0] + cells[j - 1][1], [tuple(r) for r in runs]))
        i = j
    return bands


def _lean_s3_block(self, x: torch.Tensor, layouts: Optional[dict] = None) -> torch.Tensor:
    from .s3 import _axis_runs
    if not _lean_ok(self):
        return type(self).forward(self, x, layouts)
    budget = self.lean_chunk_bytes
    n, h, w, c = x.shape
    layout = self.layout(h, w, x.device, layouts)
    attn = self.attn
    columns = _axis_runs(w, layout.window, layout.shift)
    row_bytes = n * w * (attn.num_heads * layout.window ** 2 + 8 * c) * x.element_size()   # scores, qkv, cells
    out, biases = _target(x), {}
    for top, end, runs in _cell_bands(h, layout.window, layout.shift, _count(budget, row_bytes)):
        y = attn.attend_groups(self.norm1(x[:, top:end]), [(r, col) for r in runs for col in columns], biases)
        torch.add(linear(attn.proj, y), x[:, top:end], out=out[:, top:end])
        del y
    _residual_mlp_(out.view(-1, c), self.norm2, self.mlp, budget)
    return out


# ---------------------------------------------------------------------------------------------------
# Twins: LSA over bands of window rows, GSA over chunks of queries
# ---------------------------------------------------------------------------------------------------
def _twins_lsa_into(block, x: torch.Tensor, hw: tuple[int, int], out: torch.Tensor, budget: int) -> None:
    from .twins import multihead_attention
    attn = block.attn
    n, _, c = x.shape
    h, w = hw
    ws, heads = attn.window_size, attn.num_heads
    pad_b, pad_r = (-h) % ws, (-w) % ws
    wp = w + pad_r
    across, down = wp // ws, (h + pad_b) // ws
    grid, target = x.unflatten(1, (h, w)), out.view(n, h, w, c)
    row_bytes = n * across * (heads * ws ** 4 + 6 * ws * ws * c) * x.element_size()
    band = _count(budget, row_bytes)
    for r0 in range(0, down, band):
        r1 = min(down, r0 + band)
        top, rows = r0 * ws, (r1 - r0) * ws
        real = min(h, top + rows) - top
        y = F.pad(block.norm1(grid[:, top:top + real]), (0, 0, 0, pad_r, 0, rows - real))
        windows = (r1 - r0) * across
        key_mask = None
        if pad_b or pad_r:
            keep = torch.zeros(1, rows, wp, dtype=torch.bool, device=x.device)
            keep[:, :real, :w] = True
            key_mask = attn._to_windows(keep).reshape(windows, 1, 1, ws * ws).repeat(n, 1, 1, 1)
        qkv = linear(attn.qkv, attn._to_windows(y))
        del y
        q, k, v = qkv.reshape(n * windows, ws * ws, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        o = multihead_attention(q, k, v, scale=attn.scale, key_mask=key_mask, dropout=0.0)
        del q, k, v, qkv
        o = o.transpose(1, 2).reshape(n, r1 - r0, across, ws, ws, c).transpose(2, 3)
        o = o.reshape(n, rows, wp, c)[:, :real, :w].reshape(n, real * w, c)
        o = linear(attn.proj, o)
        target[:, top:top + real] = (o + x[:, top * w:(top + real) * w]).view(n, real, w, c)
        del o


def _twins_gsa_into(block, x: torch.Tensor, hw: tuple[int, int], out: torch.Tensor, budget: int) -> None:
    from ._layers import nchw_to_nlc
    from .twins import multihead_attention
    attn = block.attn
    n, length, c = x.shape
    h, w = hw
    heads, sr = attn.num_heads, attn.sr_ratio
    if sr > 1:       # the sub-sampling conv (kernel = stride = sr) over bands of whole sr-row groups
        grid = x.unflatten(1, (h, w))
        step = sr * _count(budget, sr * n * w * c * 2 * x.element_size())
        parts = [attn.sr(block.norm1(grid[:, top:min(top + step, h // sr * sr)]).permute(0, 3, 1, 2))
                 for top in range(0, h // sr * sr, step)]
        source = attn.norm(nchw_to_nlc(torch.cat(parts, 2) if len(parts) > 1 else parts[0]))
        del parts
    else:
        source = block.norm1(x)
    k, v = linear(attn.kv, source).reshape(n, -1, 2, heads, c // heads).permute(2, 0, 3, 1, 4)
    del source
    keys = k.shape[-2]
    rows = _count(budget, n * (4 * c + heads * keys) * x.element_size())
    for start in range(0, length, rows):
        part = x[:, start:start + rows]
        m = part.shape[1]
        q = linear(attn.q, block.norm1(part)).reshape(n, m, heads, c // heads).transpose(1, 2)
        o = multihead_attention(q, k, v, scale=attn.scale, dropout=0.0)
        del q
        o = linear(attn.proj, o.transpose(1, 2).reshape(n, m, c))
        out[:, start:start + m] = o + part
        del o


def _lean_twins_block(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    from .twins import LocallyGroupedAttention
    if not _lean_ok(self):
        return type(self).forward(self, x, hw)
    c = x.shape[-1]
    out = _target(x)
    mixer = _twins_lsa_into if isinstance(self.attn, LocallyGroupedAttention) else _twins_gsa_into
    mixer(self, x, hw, out, self.lean_chunk_bytes)
    _residual_mlp_(out.view(-1, c), self.norm2, self.mlp, self.lean_chunk_bytes)
    return out


def _proper_channels_last(x: torch.Tensor) -> torch.Tensor:
    """A channels-last NCHW tensor with canonical strides. A (1, C, H, W) view of (1, H·W, C) tokens
    is channels-last by `is_contiguous`, but its batch stride (C) is not H·W·C, and oneDNN then
    reorders it (scratch twice its size) and returns NCHW. With a batch of one the batch stride
    addresses nothing: the same elements under canonical strides, no copy."""
    if x.dim() != 4 or not x.is_contiguous(memory_format=torch.channels_last):
        return x
    n, c, h, w = x.shape
    canonical = (c * h * w, 1, w * c, c)
    return x if x.stride() == canonical else x.as_strided(x.shape, canonical)


def _lean_twins_patch_embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """Twins `PatchEmbed` on canonically strided channels-last input (see `_proper_channels_last`):
    no activation reorder, and a channels-last conv output whose tokens are contiguous (no LayerNorm copy).
    The channels-last path costs a second copy of the weight instead (torch copies it to channels-last,
    oneDNN then to its blocked layout), so it is taken only where that copy is smaller than the activation
    copy and reorder it saves (large maps; at 224² the last patch embeddings of the large variants
    have weights larger than their maps)."""
    from ._layers import nchw_to_nlc
    if not _lean_ok(self):
        return type(self).forward(self, x)
    proj = self.proj
    out_elems = x.shape[0] * proj.out_channels * (x.shape[2] // proj.stride[0]) * (x.shape[3] // proj.stride[1])
    if proj.weight.numel() < x.numel() + max(x.numel(), out_elems):
        x = _proper_channels_last(x)
    x = proj(x)
    return self.norm(nchw_to_nlc(x)), (x.shape[2], x.shape[3])


def _lean_peg(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Twins PEG (tokens + depth-wise 3×3 conv of their map) on a channels-last view with a proper batch
    stride (the default's transposed view of a batch of one sends oneDNN through reorders: 2× the map in
    scratch), the sum written into the conv output."""
    from ._layers import nchw_to_nlc
    if not _lean_ok(self) or not x.is_contiguous():
        return type(self).forward(self, x, hw)
    n, _, c = x.shape
    feat = x.view(n, hw[0], hw[1], c).permute(0, 3, 1, 2)
    return nchw_to_nlc(self.proj(feat).add_(feat))


# ---------------------------------------------------------------------------------------------------
# FocalNet: focal modulation over bands of rows (halo recomputed), two passes for the global context
# ---------------------------------------------------------------------------------------------------
def _lean_focal_block(self, x: torch.Tensor) -> torch.Tensor:
    if not _lean_ok(self) or self.use_postln:
        return type(self).forward(self, x)
    mod = self.modulation
    budget = self.lean_chunk_bytes
    n, h, w, c = x.shape
    levels = mod.focal_level
    gamma_1 = self.gamma_1 if self.use_layerscale else None
    gamma_2 = self.gamma_2 if self.use_layerscale else None
    # query and the gated context sum (later the block output) as (N, H, W, C), channels-last NCHW views
    query = torch.empty((n, h, w, c), dtype=x.dtype, device=x.device)
    acc = torch.empty((n, h, w, c), dtype=x.dtype, device=x.device)
    gates_all = x.new_empty(n, levels + 1, h, w)
    q_map, acc_map = query.permute(0, 3, 1, 2), acc.permute(0, 3, 1, 2)
    column_sum: list = [None]
    # the focal levels as row streams (depth-wise conv → GELU): each keeps only the rows of its input
    # that its next output rows need, so no row is computed twice
    streams = []
    for conv, act in mod.focal_layers:
        flat = _rows_only(conv)
        streams.append(_RowStream(
            lambda t, top, bottom, _c=flat, _a=act: conv_act(_pad_rows(t, top, bottom), _c, _a),
            conv.kernel_size[0], conv.stride[0], conv.padding[0], h))

    def gated(level: int, acc_map: torch.Tensor, gates_all: torch.Tensor):
        def sink(ctx: Optional[torch.Tensor], start: int, final: bool) -> None:
            if ctx is None:
                return
            stop = start + ctx.shape[2]
            target, gate = acc_map[:, :, start:stop], gates_all[:, level:level + 1, start:stop]
            if level:
                target.addcmul_(ctx, gate)
            else:
                torch.mul(ctx, gate, out=target)
            if level == levels - 1:      # the global context: mean of the last level
                part = ctx.sum(2, keepdim=True)
                column_sum[0] = part if column_sum[0] is None else column_sum[0].add_(part)
        return sink
    for level, stream in enumerate(streams):
        stream.sinks.append(gated(level, acc_map, gates_all))
        if level + 1 < levels:
            stream.sinks.append(lambda ctx, start, final, _next=streams[level + 1]: _next.push(ctx, final))
    rows = _count(budget, n * w * (mod.f.out_features + 6 * c) * x.element_size(), MIN_BAND_ROWS)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        f = linear(mod.f, self.norm1(x[:, r0:r1])).permute(0, 3, 1, 2)
        q, ctx, gates = torch.split(f, (c, c, levels + 1), dim=1)
        q_map[:, :, r0:r1] = q
        gates_all[:, :, r0:r1] = gates
        streams[0].push(ctx, r1 >= h)
        del f, q, ctx, gates
    del streams
    column_sum = column_sum[0]
    last_gate = gates_all[:, levels:]
    ctx_global = mod.act((column_sum / h).mean(3, keepdim=True))
    out = x if x.is_contiguous() else acc       # pass 2 is token-wise: the result may overwrite x
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        target = acc_map[:, :, r0:r1]
        target.addcmul_(ctx_global, last_gate[:, :, r0:r1])
        modulator = mod.h(target / (levels + 1) if mod.normalize_modulator else target)
        o = modulator.mul_(q_map[:, :, r0:r1]).permute(0, 2, 3, 1)
        if hasattr(mod, 'ln'):
            o = mod.ln(o)
        o = linear(mod.proj, o)
        if gamma_1 is not None:
            o = gamma_1 * o
        torch.add(o, x[:, r0:r1], out=out[:, r0:r1])
        del modulator, o
    del query, q_map, last_gate, gates_all, acc_map, target
    if out is x:
        del acc
    _residual_mlp_(out.view(-1, c), self.norm2, self.mlp, budget, gamma_2)
    return out


# ---------------------------------------------------------------------------------------------------
# HRFormer: centre-padded window attention over bands of window rows; ConvFFN over bands (1-row halo)
# ---------------------------------------------------------------------------------------------------
def _hrformer_attention_into(block, grid: torch.Tensor, target: torch.Tensor, budget: int) -> None:
    attn = block.attn
    n, h, w, c = grid.shape
    ws, heads = attn.window_size, attn.num_heads
    pad_h, pad_w = (-h) % ws, (-w) % ws
    pads = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
    hp, wp = h + pad_h, w + pad_w
    across, down = wp // ws, hp // ws
    head_dim = c // heads
    bias = attn._attn_bias(pads, (hp, wp), grid)
    row_bytes = n * across * (2 * heads * ws ** 4 + 6 * ws * ws * c) * grid.element_size()
    band = _count(budget, row_bytes)
    for r0 in range(0, down, band):
        r1 = min(down, r0 + band)
        first, last = r0 * ws - pads[2], r1 * ws - pads[2]          # map rows of the band (may overhang)
        s0, s1 = max(0, first), min(h, last)
        y = F.pad(block.norm1(grid[:, s0:s1]), (0, 0, pads[0], pads[1], s0 - first, last - s1))
        nb = (r1 - r0) * across
        windows = y.reshape(n, r1 - r0, ws, across, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(n, nb, ws * ws, c)
        del y
        qkv = linear(attn.qkv, windows).reshape(n, nb, ws * ws, 3, heads, head_dim)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)
        del qkv, windows
        part = bias if bias is None or bias.dim() < 4 else bias[r0 * across:r1 * across]
        if part is None:
            o = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)
        else:
            scores = (q * (head_dim ** -0.5 if attn.scale is None else attn.scale)) @ k.transpose(-2, -1)
            o = (scores + part).softmax(-1).to(v.dtype) @ v
            del scores
        del q, k, v
        o = linear(attn.proj, o.transpose(2, 3).reshape(n, nb, ws * ws, c))
        o = o.reshape(n, r1 - r0, across, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(n, last - first, wp, c)
        target[:, s0:s1] = o[:, s0 - first:s1 - first, pads[0]:pads[0] + w] + grid[:, s0:s1]
        del o


def _hrformer_ffn_(block, grid: torch.Tensor, budget: int) -> None:
    """grid (N, H, W, C), owned: grid += ConvFFN(norm2(grid)) over bands of rows, in place; each band
    reads one row above it as it was before the previous band's update (kept aside)."""
    ffn = block.ffn
    n, h, w, c = grid.shape
    hidden = ffn.fc1.out_channels
    rows = _count(budget, n * w * (2 * c + 3 * hidden) * grid.element_size(), MIN_BAND_ROWS)
    above = None                                   # row r0 - 1 before its update
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        b = min(h, r1 + 1)
        src = grid[:, r0:b] if above is None else torch.cat([above, grid[:, r0:b]], 1)
        lo = 0 if above is None else 1
        t = block.norm2(src).permute(0, 3, 1, 2)
        t = conv_norm(t, ffn.fc1, ffn.norm1, ffn.act)
        t = conv_norm(t, ffn.dw3x3, ffn.norm2, ffn.act)
        t = conv_norm(t[:, :, lo:lo + r1 - r0], ffn.fc2, ffn.norm3, ffn.act)
        above = grid[:, r1 - 1:r1].clone() if r1 < h else None
        grid[:, r0:r1].add_(t.permute(0, 2, 3, 1))
        del src, t


def _lean_hrformer_block(self, x: torch.Tensor) -> torch.Tensor:
    from ._layers import nchw_to_nlc, nlc_to_nchw
    if not _lean_ok(self):
        return type(self).forward(self, x)
    n, c, h, w = x.shape
    grid = nchw_to_nlc(x).unflatten(1, (h, w))
    out = _target(grid)
    _hrformer_attention_into(self, grid, out, self.lean_chunk_bytes)
    _hrformer_ffn_(self, out, self.lean_chunk_bytes)
    # canonical channels-last strides: the fuse layers' convolutions would otherwise reorder a batch-of-one
    # token view (scratch ~2.8x the branch map, and time)
    return _proper_channels_last(nlc_to_nchw(out.view(n, h * w, c), (h, w)))


# ---------------------------------------------------------------------------------------------------
# row streaming: convolution stacks (HRFormer's stem, stage 1 and first transition) computed in bands
# of rows, each operator keeping only the input rows its next output rows still need (no recomputation
# of whole bands: a 3×3 convolution re-reads its halo rows from its own buffer)
# ---------------------------------------------------------------------------------------------------
class _RowStream:
    """One operator streamed over rows (NCHW, rows = dim 2): output row i needs input rows
    [i·stride − pad, i·stride − pad + kernel) (rows outside the map are zeros). `fn(rows, top, bottom)`
    maps the real input rows of a span to its output rows, `top`/`bottom` zero rows missing above/below
    the map. Outputs go to `sinks(rows, first_row, final)`."""

    def __init__(self, fn, kernel: int, stride: int, pad: int, height_in: int):
        self.fn, self.kernel, self.stride, self.pad = fn, kernel, stride, pad
        self.height_in = height_in
        self.height_out = (height_in + 2 * pad - kernel) // stride + 1
        self.buf: Optional[torch.Tensor] = None
        self.lo = 0            # map row of buf's first row
        self.done = 0          # output rows produced
        self.sinks: list = []

    def push(self, rows: Optional[torch.Tensor], final: bool) -> None:
        if rows is not None:
            self.buf = rows if self.buf is None else torch.cat([self.buf, rows], 2)
        have = self.lo + (0 if self.buf is None else self.buf.shape[2])
        end = self.height_out if final else \
            min(self.height_out, max(0, (have + self.pad - self.kernel) // self.stride + 1))
        out, start = None, self.done
        if end > self.done:
            first = self.done * self.stride - self.pad
            last = (end - 1) * self.stride - self.pad + self.kernel
            a, b = max(first, 0), min(last, self.height_in)
            out = self.fn(self.buf[:, :, a - self.lo:b - self.lo], a - first, last - b)
            self.done = end
            keep = min(max(end * self.stride - self.pad, self.lo), have)
            self.buf = self.buf[:, :, keep - self.lo:]
            self.lo = keep
        if final:
            self.buf = None
        for sink in self.sinks:
            sink(out, start, final)


def _pad_rows(t: torch.Tensor, top: int, bottom: int) -> torch.Tensor:
    if not (top or bottom):
        return t
    return F.pad(t, (0, 0, top, bottom)).contiguous(memory_format=torch.channels_last)


def _rows_only(conv: nn.Conv2d) -> nn.Conv2d:
    """`conv` (same parameters) without padding along rows: the streams pad rows themselves."""
    flat = copy.copy(conv)
    flat.padding = (0, conv.padding[1])
    return flat


def _conv_stream(conv: nn.Conv2d, norm: nn.Module, act: Optional[nn.Module], height: int) -> _RowStream:
    """`act(norm(conv(x)))` (`conv_norm`, BatchNorm folded) as a row stream."""
    flat = _rows_only(conv)
    return _RowStream(lambda t, top, bottom: conv_norm(_pad_rows(t, top, bottom), flat, norm, act),
                      conv.kernel_size[0], conv.stride[0], conv.padding[0], height)


def _bottleneck_stream(block: nn.Module, height: int) -> _RowStream:
    """HRFormer's stage-1 Bottleneck as one row stream (its only row-mixing layer is the 3×3 conv2)."""
    conv2 = _rows_only(block.conv2)

    def fn(t: torch.Tensor, top: int, bottom: int) -> torch.Tensor:
        identity = t[:, :, 1 - top:t.shape[2] - 1 + bottom]
        if block.downsample is not None:
            identity = block.downsample(identity)
        o = conv_norm(t, block.conv1, block.norm1, block.relu)
        o = conv_norm(_pad_rows(o, top, bottom), conv2, block.norm2, block.relu)
        o = conv_norm(o, block.conv3, block.norm3)
        return block.relu(o.add_(identity))
    return _RowStream(fn, 3, 1, 1, height)


def _conv_norm_act(module: Optional[nn.Module]) -> Optional[tuple]:
    """(conv, norm, act) of a `ConvNormSequential` conv → BN (→ ReLU) (or a Sequential holding one)."""
    from ._layers import ConvNormSequential
    if isinstance(module, nn.Sequential) and len(module) == 1 and not isinstance(module, ConvNormSequential):
        module = module[0]
    if not isinstance(module, ConvNormSequential) or len(module) not in (2, 3):
        return None
    conv, norm = module[0], module[1]
    act = module[2] if len(module) == 3 else None
    if (type(conv) is not nn.Conv2d or not isinstance(norm, nn.modules.batchnorm._BatchNorm)
            or conv.padding_mode != 'zeros' or isinstance(conv.padding, str) or conv.dilation != (1, 1)
            or (act is not None and not isinstance(act, nn.ReLU))):
        return None
    return conv, norm, act


def _hrformer_stage1_streamed(model: nn.Module, x: torch.Tensor, budget: int) -> Optional[list]:
    """Stem, stage 1 and transition1 of HRFormer over bands of rows: the stage-1 output (256 channels
    at stride 4) never exists whole; returns the stage-2 inputs, or None where the layout is unusual."""
    parts = [_conv_norm_act(t) for t in model.transition1]
    if any(p is None for p in parts) or len(parts) != 2:
        return None
    n, _, h, w = x.shape
    stem1 = _conv_stream(model.conv1, model.norm1, model.relu, h)
    stem2 = _conv_stream(model.conv2, model.norm2, model.relu, stem1.height_out)
    chain = [stem1, stem2]
    for block in model.layer1:
        chain.append(_bottleneck_stream(block, chain[-1].height_out))
    for up, down in zip(chain, chain[1:]):
        up.sinks.append(lambda rows, start, final, _down=down: _down.push(rows, final))
    width = w
    for conv in (model.conv1, model.conv2):
        width = (width + 2 * conv.padding[1] - conv.kernel_size[1]) // conv.stride[1] + 1
    outs = []
    for conv, norm, act in parts:
        stream = _conv_stream(conv, norm, act, chain[-1].height_out)
        out_w = (width + 2 * conv.padding[1] - conv.kernel_size[1]) // conv.stride[1] + 1
        out = torch.empty(n, conv.out_channels, stream.height_out, out_w, dtype=x.dtype, device=x.device,
                          memory_format=torch.channels_last)
        stream.sinks.append(lambda rows, start, final, _out=out: rows is not None and
                            _out[:, :, start:start + rows.shape[2]].copy_(rows))
        chain[-1].sinks.append(lambda rows, start, final, _s=stream: _s.push(rows, final))
        outs.append(out)
    per_row = n * width * (6 * model.layer1[-1].conv3.out_channels) * x.element_size()   # at stride 4
    step = 4 * _count(budget, per_row, MIN_BAND_ROWS)
    for top in range(0, h, step):
        rows = x[:, :, top:top + step].contiguous(memory_format=torch.channels_last)
        stem1.push(rows, top + step >= h)
        del rows
    return outs


def _lean_hrformer_forward(self, x: torch.Tensor) -> tuple:
    """HRFormer.forward with the stage-1 pipeline streamed (its output is the largest activation, held
    by the default forward through every later stage)."""
    if not _lean_ok(self) or x.dim() != 4:
        return type(self).forward(self, x)
    self.check_input(x)
    xs = _hrformer_stage1_streamed(self, x, self.lean_chunk_bytes)
    if xs is None:
        return type(self).forward(self, x)
    return self._transformer_stages(xs, entered=True)


# ---------------------------------------------------------------------------------------------------
# the mechanism
# ---------------------------------------------------------------------------------------------------
def _lean_forwards() -> dict[type, Any]:
    """Module type → lean forward (exact types: a subclass keeps its own forward)."""
    from .focalnet import FocalNetBlock
    from .hrformer import HRFormer, HRFormerBlock
    from .s3 import S3Block
    from .twins import PatchEmbed as TwinsPatchEmbed
    from .twins import PositionEncodingGenerator, TwinsBlock
    return {S3Block: _lean_s3_block, TwinsBlock: _lean_twins_block, FocalNetBlock: _lean_focal_block,
            HRFormerBlock: _lean_hrformer_block, HRFormer: _lean_hrformer_forward,
            TwinsPatchEmbed: _lean_twins_patch_embed, PositionEncodingGenerator: _lean_peg, Mlp: _lean_mlp_forward}


@register_mechanism('lean', order=90)
def apply_lean(model: DenseBackbone, cfg: Any) -> None:
    """Give every block (and every other `Mlp`) of `model` its lean forward; records `model.lean_cfg`."""
    spec = parse_lean(cfg)
    model.lean_cfg = spec
    if not spec:
        return
    table = _lean_forwards()
    for module in model.modules():
        forward = table.get(type(module))
        if forward is not None:
            module.lean_chunk_bytes = spec['chunk_bytes']
            module.forward = types.MethodType(forward, module)


def lean_modules(model: nn.Module) -> int:
    """How many modules run lean."""
    return sum(1 for m in model.modules() if getattr(m, 'lean_chunk_bytes', None))
