"""HRFormer: High-Resolution Transformer for dense prediction.

Paper: Yuan et al., "HRFormer: High-Resolution Vision Transformer for Dense Predict", NeurIPS 2021,
https://arxiv.org/abs/2110.09408. Original code: https://github.com/HRNet/HRFormer @ 1245b88 (MIT
license): `cls/` (ImageNet), `pose/` (mmpose 0.x fork), `seg/` (openseg). Written from scratch after
the facts in ../shared/research/models.md §3 and the golden fixtures of the official code.

Architecture: HRNet layout. Stem (two 3×3 stride-2 convs, 64 channels) → stage 1 (Bottlenecks) →
stages 2-4 of `HRFormerModule`s whose parallel branches (strides 4, 8, 16, 32) are stacks of
`HRFormerBlock`s (window self-attention + depth-wise conv FFN), followed by multi-resolution fusion.

Variants (`arch=`): 'tiny', 'small', 'base' (ImageNet models) and 'base-win13', 'base-win15'
(segmentation models with window 13 / 15). A dict `arch` uses the official pose `extra` structure
(`drop_path_rate`, `stage1`..`stage4` with `num_modules`, `num_branches`, `block`, `num_blocks`,
`num_channels`, `num_heads`, `num_mlp_ratios`, `num_window_sizes`, `multiscale_output`); stage keys
may be partial (missing keys come from `DEFAULTS`, HRFormer-S). Also accepted and converted:
the mmpose 1.x spellings (`window_sizes`, `mlp_ratios`, `block='HRFORMER'|'HRFORMERBLOCK'`) and the
classification `MODEL.HRT` yacs cfg (`DROP_PATH_RATE`, `STAGE1`..`STAGE4` with upper-case keys; see
`arch_from_classification_cfg`).

Behaviour switches (the official code versions differ; defaults = classification/segmentation code,
which produced the ImageNet weights):
    with_rpe=True         add the relative position bias (cls/seg True; the official pose code never
                          adds it: use False to reproduce it; mmpose 1.x adds it).
    fuse_upsample='nearest'  fusion upsampling: 'nearest' = nearest ×2^k then bilinear
                          (align_corners=True) resize to the exact size (cls/seg); 'bilinear' =
                          bilinear ×2^k (align_corners=False) then bilinear resize (official pose;
                          equals mmpose 1.x wherever mmpose runs, i.e. exact power-of-2 ratios).
    out_indices           which branches to return. The last stage-4 module builds fusion layers only
                          for these branches, so out_indices=(0,) gives the official pose layout
                          (`multiscale_output=False`: only `fuse_layers.0`, S 7,746,218 parameters).
                          Default: (0, 1, 2, 3) when the arch says `multiscale_output=True` (every
                          named variant), else (0,) (an official pose `extra` without the key).
    pad_mask=False        mask padded keys in window attention (the official code attends to the
                          zero padding; True changes only windows that contain padding).

Stages for `frozen_stages` (package convention): stage -1 = stem (conv1, norm1, conv2, norm2);
0 = stage 1 (layer1) + transition1; 1 = stage2 + transition2; 2 = stage3 + transition3; 3 = stage4.
`frozen_stages=k` (k ≥ 0) freezes the stem and stages 0..k; -1 (default) freezes nothing. mmpose's
HRNet/HRFormer count the stem as 0, so mmpose `frozen_stages=k` (k ≥ 1) is our `k - 1`; mmpose's
stem-only freezing (0) has no equivalent here.

Differences from the original:
    * one class for the three official code versions, selected by the switches above;
    * fused `qkv` projection (the official code has q/k/v_proj; converted on load, numerically equal);
    * window attention through `F.scaled_dot_product_attention`; the relative position index is a
      non-persistent buffer (recomputed, never loaded), so tables can be resized for other windows;
    * optional padded-token mask (mmpose 1.x applies its mask only when both H and W are padded;
      ours masks whenever any side is padded);
    * the classification head (incre_modules, downsamp_modules, final_layer, classifier) is not
      built; its checkpoint keys are ignored on load;
    * the input is made channels-last at the stem (outputs are channels-last strided NCHW tensors, the
      same values); in training the ConvFFN recomputes its hidden activations in backward instead of
      holding them (`backbones._layers.RecomputedActivations`; off inside checkpoints, e.g. `with_cp`).
"""
from __future__ import annotations

import copy
import math
import re
from typing import Any, ClassVar, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._base import (FLAG, POSITIVE, POSITIVE_INT, DenseBackbone, Each, OneOf, Rule, register_backbone,
                    register_converter)
from ._layers import (NORM2D_TYPES, ConvNormSequential, add_residual, build_norm2d, conv_norm,
                      drop_path_or_identity, drop_path_schedule, linear, nchw_to_nlc, nlc_to_nchw,
                      recompute_activations, relative_position_bias, relative_position_index,
                      resize_relative_position_tables,
                      run_maybe_checkpointed)
from ._taps import Tap

__all__ = ['HRFormer', 'convert_hrformer', 'arch_from_classification_cfg']

STEM_CHANNELS = 64
BOTTLENECK_EXPANSION = 4
FUSE_UPSAMPLE_MODES = ('nearest', 'bilinear')


# ---------------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------------
class Bottleneck(nn.Module):
    """ResNet bottleneck of stage 1: 1×1 → 3×3 → 1×1 (×4 channels), residual, ReLU. NCHW → NCHW."""

    def __init__(self, in_channels: int, planes: int, norm_cfg: Optional[dict]):
        super().__init__()
        out_channels = planes * BOTTLENECK_EXPANSION
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.norm1 = build_norm2d(norm_cfg, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.norm2 = build_norm2d(norm_cfg, planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.norm3 = build_norm2d(norm_cfg, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if in_channels != out_channels:
            self.downsample = ConvNormSequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                                 build_norm2d(norm_cfg, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = conv_norm(x, self.conv1, self.norm1, self.relu)
        out = conv_norm(out, self.conv2, self.norm2, self.relu)
        out = conv_norm(out, self.conv3, self.norm3)
        return self.relu(out + identity)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping w×w windows, with centre zero padding.

    (N, H, W, C) → (N, H, W, C). The map is padded to multiples of w (top/left get pad // 2, as the
    official code), attended window by window and cropped back.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, with_rpe: bool = True,
                 pad_mask: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'channels {dim} not divisible by num_heads {num_heads}')
        self.num_heads = num_heads
        self.window_size = window_size
        self.with_rpe = with_rpe
        self.pad_mask = pad_mask
        self.scale: Optional[float] = None      # softmax scale; None: head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        # Kept even when with_rpe=False so that official pose checkpoints load; frozen then (unused).
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.relative_position_bias_table.requires_grad_(with_rpe)
        self.register_buffer('relative_position_index', relative_position_index(window_size),
                             persistent=False)

    def _attn_bias(self, pads: tuple[int, int, int, int], padded_hw: tuple[int, int],
                   x: torch.Tensor) -> Optional[torch.Tensor]:
        """Additive attention bias broadcastable to (N, nW, heads, w², w²), or None."""
        w = self.window_size
        bias = None
        if self.with_rpe:
            bias = relative_position_bias(self.relative_position_bias_table,
                                          self.relative_position_index)   # heads, N, N (fp32 table)
        if self.pad_mask and any(pads):
            left, right, top, bottom = pads
            hp, wp = padded_hw
            valid = x.new_zeros(hp, wp, dtype=torch.bool)
            valid[top:hp - bottom, left:wp - right] = True
            valid = valid.reshape(hp // w, w, wp // w, w).permute(0, 2, 1, 3).reshape(-1, 1, 1, w * w)
            mask = torch.zeros(valid.shape, dtype=x.dtype, device=x.device)
            mask = mask.masked_fill(~valid, float('-inf'))              # nW, 1, 1, N (keys)
            bias = mask if bias is None else bias + mask
        return bias

    def forward(self, x: torch.Tensor, tap: Optional[nn.Module] = None) -> torch.Tensor:
        """`tap` (the block's `mixer_tap`) runs on the padded map: padded tokens, attended as keys
        without `pad_mask`, see what `qkv` sees."""
        n, h, w_, c = x.shape
        w = self.window_size
        pad_h, pad_w = (-h) % w, (-w_) % w
        pads = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
        if pad_h or pad_w:
            x = F.pad(x, (0, 0) + pads)
        if tap is not None:
            x = tap(x)
        hp, wp = h + pad_h, w_ + pad_w
        nh, nw = hp // w, wp // w
        windows = x.reshape(n, nh, w, nw, w, c).permute(0, 1, 3, 2, 4, 5).reshape(n, nh * nw, w * w, c)
        head_dim = c // self.num_heads
        qkv = linear(self.qkv, windows).reshape(n, nh * nw, w * w, 3, self.num_heads, head_dim)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)            # each N, nW, heads, w², hd
        bias = self._attn_bias(pads, (hp, wp), x)
        if bias is None:
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        else:
            # Explicit: with a float mask the CPU SDPA takes its math path plus fully-masked-row checks
            # (all/where/isneginf, ~10 % of HRFormer's time); here the bias add and softmax run in fp32
            # under autocast (matmuls stay low precision).
            attn = (q * (head_dim ** -0.5 if self.scale is None else self.scale)) @ k.transpose(-2, -1)
            out = (attn + bias).softmax(-1).to(v.dtype) @ v
        out = linear(self.proj, out.transpose(2, 3).reshape(n, nh * nw, w * w, c))
        out = out.reshape(n, nh, nw, w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(n, hp, wp, c)
        return out[:, pads[2]:pads[2] + h, pads[0]:pads[0] + w_]


class ConvFFN(nn.Module):
    """HRFormer FFN on NCHW maps: 1×1 → BN → GELU → dw 3×3 → BN → GELU → 1×1 → BN → GELU."""

    def __init__(self, dim: int, hidden: int, norm_cfg: Optional[dict]):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.norm1 = build_norm2d(norm_cfg, hidden)
        self.dw3x3 = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.norm2 = build_norm2d(norm_cfg, hidden)
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.norm3 = build_norm2d(norm_cfg, dim)
        self.act = nn.GELU()
        self.recompute_hidden = True      # inside checkpoints (with_cp, adapters' recompute) a no-op anyway

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # training: the hidden GELU outputs are recomputed for the convolutions' backward, not held
        with recompute_activations(self.recompute_hidden):
            x = conv_norm(x, self.fc1, self.norm1, self.act)
            x = conv_norm(x, self.dw3x3, self.norm2, self.act)
            return conv_norm(x, self.fc2, self.norm3, self.act)


class HRFormerBlock(nn.Module):
    """x + DropPath(WindowAttention(LN(x))), then x + DropPath(ConvFFN(LN(x))). NCHW → NCHW."""

    def __init__(self, dim: int, num_heads: int, window_size: int, mlp_ratio: float, drop_path: float,
                 norm_cfg: Optional[dict], with_rpe: bool, pad_mask: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = WindowAttention(dim, num_heads, window_size, with_rpe=with_rpe, pad_mask=pad_mask)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.ffn = ConvFFN(dim, int(dim * mlp_ratio), norm_cfg)
        self.drop_path = drop_path_or_identity(drop_path)
        self.mixer_tap = Tap()   # applied inside `attn`, after its padding
        self.mlp_tap = Tap()     # on norm2(x)

    def tap_consumers(self) -> dict[str, list[str]]:
        return {'mixer_tap': ['attn.qkv'], 'mlp_tap': ['ffn.fc1']}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        tokens = nchw_to_nlc(x)
        attn = self.mixer_tap.branch(
            lambda t: self.attn(self.norm1(t).reshape(n, h, w, c), tap=self.mixer_tap).reshape(n, h * w, c), tokens)
        tokens = add_residual(tokens, self.drop_path(attn), self.attn)
        ffn = self.mlp_tap.feed(lambda y: self.ffn(nlc_to_nchw(y, (h, w))), tokens, self.norm2)
        tokens = add_residual(tokens, self.drop_path(nchw_to_nlc(ffn)), self.ffn)
        return nlc_to_nchw(tokens, (h, w))


# ---------------------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------------------
def _conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int, norm_cfg: Optional[dict],
             groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
            build_norm2d(norm_cfg, out_ch)]


class HRFormerModule(nn.Module):
    """Parallel branches of HRFormerBlocks, then fusion: output i = ReLU(Σ_j resample_j→i(x_j)).

    Input and output: a list of NCHW maps, branch b at stride 4·2^b. `fuse_outputs` lists the output
    branches whose fusion is built (all of them except, possibly, in the very last module); the
    others come back as None. Keys: `branches.{b}.{k}`, `fuse_layers.{i}.{j}` as the official code.
    """

    def __init__(self, channels: Sequence[int], num_blocks: Sequence[int], num_heads: Sequence[int],
                 window_sizes: Sequence[int], mlp_ratios: Sequence[float], drop_paths: Sequence[float],
                 fuse_outputs: Sequence[int], norm_cfg: Optional[dict], with_rpe: bool, pad_mask: bool,
                 fuse_upsample: str, with_cp: bool):
        super().__init__()
        self.num_branches = len(channels)
        self.fuse_upsample = fuse_upsample
        self.with_cp = with_cp
        self.branches = nn.ModuleList(
            nn.Sequential(*[HRFormerBlock(channels[b], num_heads[b], window_sizes[b], mlp_ratios[b],
                                          drop_paths[k], norm_cfg, with_rpe, pad_mask)
                            for k in range(num_blocks[b])])
            for b in range(self.num_branches))
        self.fuse_layers = None
        if self.num_branches > 1:
            self.fuse_layers = nn.ModuleList(
                self._make_fuse_layer(i, channels, norm_cfg) if i in fuse_outputs else None
                for i in range(max(fuse_outputs) + 1))
        self.relu = nn.ReLU()

    def _make_fuse_layer(self, i: int, channels: Sequence[int], norm_cfg: Optional[dict]) -> nn.ModuleList:
        layers: list[Optional[nn.Module]] = []
        for j, in_ch in enumerate(channels):
            if j > i:    # 1×1 conv + BN here; the upsampling is done in `_fuse` (no parameters)
                layers.append(ConvNormSequential(*_conv_bn(in_ch, channels[i], 1, 1, norm_cfg)))
            elif j == i:
                layers.append(None)
            else:        # (i - j) × [dw 3×3 s2, BN, 1×1, BN], ReLU between steps
                steps = []
                for step in range(i - j):
                    last = step == i - j - 1
                    out_ch = channels[i] if last else in_ch
                    mods = (_conv_bn(in_ch, in_ch, 3, 2, norm_cfg, groups=in_ch)
                            + _conv_bn(in_ch, out_ch, 1, 1, norm_cfg))
                    if not last:
                        mods.append(nn.ReLU())
                    steps.append(ConvNormSequential(*mods))
                layers.append(nn.Sequential(*steps))
        return nn.ModuleList(layers)

    def _upsample(self, x: torch.Tensor, factor: int, size: tuple[int, int]) -> torch.Tensor:
        if self.fuse_upsample == 'nearest':      # classification / segmentation code
            x = F.interpolate(x, scale_factor=factor, mode='nearest')
            if x.shape[-2:] != size:
                x = F.interpolate(x, size=size, mode='bilinear', align_corners=True)
        else:                                    # official pose code (and mmpose 1.x)
            x = F.interpolate(x, scale_factor=factor, mode='bilinear', align_corners=False)
            if x.shape[-2:] != size:
                x = F.interpolate(x, size=size, mode='bilinear', align_corners=False)
        return x

    def forward(self, xs: list[torch.Tensor]) -> list[Optional[torch.Tensor]]:
        xs = [run_maybe_checkpointed(branch, x, enabled=self.with_cp) for branch, x in zip(self.branches, xs)]
        if self.fuse_layers is None:
            return xs
        outs: list[Optional[torch.Tensor]] = [None] * self.num_branches
        for i, layer in enumerate(self.fuse_layers):
            if layer is None:
                continue
            size = tuple(xs[i].shape[-2:])
            y = xs[i]
            for j, x in enumerate(xs):
                if j > i:
                    y = y + self._upsample(layer[j](x), 2 ** (j - i), size)
                elif j < i:
                    y = y + layer[j](x)
            outs[i] = self.relu(y)
        return outs


# ---------------------------------------------------------------------------------------------------
# backbone
# ---------------------------------------------------------------------------------------------------
_STAGE_KEYS = ('num_modules', 'num_branches', 'block', 'num_blocks', 'num_channels', 'num_heads',
               'num_mlp_ratios', 'num_window_sizes', 'multiscale_output')
_STAGE_ALIASES = {'window_sizes': 'num_window_sizes', 'mlp_ratios': 'num_mlp_ratios'}   # mmpose 1.x
_TRANSFORMER_BLOCK_NAMES = ('TRANSFORMER_BLOCK', 'HRFORMER', 'HRFORMERBLOCK', 'HRFORMER_BLOCK')
_STAGE1_IGNORED = ('num_heads', 'num_mlp_ratios', 'num_window_sizes', 'multiscale_output')


class HRFormer(DenseBackbone):
    """HRFormer backbone: N×3×H×W → tuple of N×C_b×ceil(H/s_b)×ceil(W/s_b), s_b = 4·2^b.

    Args:
        arch: variant name ('tiny', 'small', 'base', 'base-win13', 'base-win15') or a dict in the
            official pose `extra` structure (or the classification MODEL.HRT cfg), see module doc.
        out_indices: branches to return (0 = stride 4 ... 3 = stride 32). None: all four when the
            arch has `stage4.multiscale_output=True`, else (0,).
        drop_path_rate: overrides the arch's `drop_path_rate` when given.
        frozen_stages: -1 = nothing; k ≥ 0 freezes the stem and stages 0..k (module doc).
        norm_eval: keep every BatchNorm in eval mode while training.
        with_cp: non-reentrant activation checkpointing of each branch and of stage 1.
        init_cfg: OpenMMLab init; `dict(type='Pretrained', checkpoint=...)` loads and converts.
        in_channels: input channels (official pose argument).
        norm_cfg: BatchNorm cfg for every BN (`dict(type='BN')` or `dict(type='SyncBN')`).
        with_rpe: add the relative position bias (False = official pose behaviour).
        fuse_upsample: 'nearest' (cls/seg) or 'bilinear' (pose), see module doc.
        pad_mask: mask padded tokens in window attention (off = official behaviour).
        qk_scale: softmax scale of window attention (None: head_dim ** -0.5; a narrow model exported
            from a slimmable one keeps its full width's scale).
        stem_channels: width of the two stem convolutions (official: 64; narrower in exported narrow models).
    """

    FAMILY: ClassVar[str] = 'hrformer'
    ZOO_PREFIX: ClassVar[str] = 'hrformer'
    NUM_STAGES: ClassVar[int] = 4
    DEFAULTS: ClassVar[dict[str, Any]] = {}     # filled below from the ARCHS helper (HRFormer-S, pose)
    ARCHS: ClassVar[dict[str, dict[str, Any]]] = {}
    IGNORED_CHECKPOINT_KEYS: ClassVar[tuple[str, ...]] = (
        r'^(incre_modules|downsamp_modules|final_layer|classifier)\.',   # classification head
        r'^stage4\.\d+\.fuse_layers\.[1-3]\.',    # multi-scale fusion when only some outputs are built
    )
    ARG_RULES: ClassVar[dict[str, Rule]] = {
        'with_rpe': FLAG, 'pad_mask': FLAG, 'norm_cfg.type': OneOf(NORM2D_TYPES), 'stem_channels': POSITIVE_INT,
        'stage1.num_blocks': Each(POSITIVE_INT), 'stage1.num_channels': Each(POSITIVE_INT),
        **{f'stage{s}.{key}': rule for s in (2, 3, 4) for key, rule in (
            ('num_modules', POSITIVE_INT), ('num_blocks', Each(POSITIVE_INT)),
            ('num_channels', Each(POSITIVE_INT)), ('num_heads', Each(POSITIVE_INT)),
            ('num_mlp_ratios', Each(POSITIVE)), ('num_window_sizes', Each(POSITIVE_INT)))}}
    DIVISIBLE: ClassVar[tuple[tuple[str, str], ...]] = tuple(
        (f'stage{s}.num_channels', f'stage{s}.num_heads') for s in (2, 3, 4))

    def __init__(self, arch: str | dict = 'small', *, out_indices: Optional[Sequence[int]] = None,
                 drop_path_rate: Optional[float] = None, frozen_stages: int = -1, norm_eval: bool = False,
                 with_cp: bool = False, init_cfg: Optional[dict] = None, in_channels: int = 3,
                 norm_cfg: Optional[dict] = None, with_rpe: bool = True, fuse_upsample: str = 'nearest',
                 pad_mask: bool = False, qk_scale: Optional[float] = None, stem_channels: int = STEM_CHANNELS):
        cfg = self.resolve_arch(arch)
        multiscale = bool(cfg['stage4'].get('multiscale_output', False))
        if out_indices is None:
            out_indices = (0, 1, 2, 3) if multiscale else (0,)
        out_indices = tuple(int(i) for i in out_indices)
        if not out_indices or any(i not in range(4) for i in out_indices) or len(set(out_indices)) != len(out_indices):
            raise ValueError(f'out_indices must be distinct branch indices in 0..3, got {out_indices}')
        if not multiscale and out_indices != (0,):
            raise ValueError(f'arch has stage4.multiscale_output=False (highest resolution only) but '
                             f'out_indices={out_indices}; set multiscale_output=True or out_indices=(0,)')
        if fuse_upsample not in FUSE_UPSAMPLE_MODES:
            raise ValueError(f'fuse_upsample must be one of {FUSE_UPSAMPLE_MODES}, got {fuse_upsample!r}')
        super().__init__(out_indices=out_indices, frozen_stages=frozen_stages, norm_eval=norm_eval,
                         with_cp=with_cp, init_cfg=init_cfg, in_channels=in_channels)
        self.arch_cfg = cfg
        self.with_rpe = with_rpe
        self.fuse_upsample = fuse_upsample
        self.pad_mask = pad_mask
        norm_cfg = dict(norm_cfg) if norm_cfg else dict(type='BN')
        rate = cfg['drop_path_rate'] if drop_path_rate is None else drop_path_rate

        # stem and stage 1
        self.conv1 = nn.Conv2d(in_channels, stem_channels, 3, 2, 1, bias=False)
        self.norm1 = build_norm2d(norm_cfg, stem_channels)
        self.conv2 = nn.Conv2d(stem_channels, stem_channels, 3, 2, 1, bias=False)
        self.norm2 = build_norm2d(norm_cfg, stem_channels)
        self.relu = nn.ReLU(inplace=True)
        s1 = cfg['stage1']
        planes = s1['num_channels'][0]
        blocks = [Bottleneck(stem_channels, planes, norm_cfg)]
        blocks += [Bottleneck(planes * BOTTLENECK_EXPANSION, planes, norm_cfg)
                   for _ in range(1, s1['num_blocks'][0])]
        self.layer1 = nn.Sequential(*blocks)

        # stages 2-4 with their transitions
        stage_cfgs = [cfg[f'stage{s}'] for s in (2, 3, 4)]
        depths = [c['num_blocks'][0] * c['num_modules'] for c in stage_cfgs]
        rates = drop_path_schedule(rate, depths)
        prev_channels = [planes * BOTTLENECK_EXPANSION]
        for s, (sc, stage_rates) in enumerate(zip(stage_cfgs, rates), start=2):
            channels = list(sc['num_channels'])
            setattr(self, f'transition{s - 1}', self._make_transition(prev_channels, channels, norm_cfg))
            modules = []
            nb = sc['num_blocks'][0]
            for m in range(sc['num_modules']):
                last = s == 4 and m == sc['num_modules'] - 1
                modules.append(HRFormerModule(
                    channels, sc['num_blocks'], sc['num_heads'], sc['num_window_sizes'],
                    sc['num_mlp_ratios'], stage_rates[nb * m:nb * (m + 1)],
                    fuse_outputs=sorted(out_indices) if last else range(len(channels)),
                    norm_cfg=norm_cfg, with_rpe=with_rpe, pad_mask=pad_mask,
                    fuse_upsample=fuse_upsample, with_cp=with_cp))
            setattr(self, f'stage{s}', nn.ModuleList(modules))
            prev_channels = channels
        self._feature_info = [dict(channels=prev_channels[i], stride=4 * 2 ** i, index=i) for i in out_indices]
        for module in self.modules():
            if isinstance(module, WindowAttention):
                module.scale = qk_scale
        self._freeze_stages()

    @staticmethod
    def _make_transition(prev: Sequence[int], cur: Sequence[int], norm_cfg: dict) -> nn.ModuleList:
        """Official layout: changed widths get conv3×3+BN+ReLU (`.{i}.0/1`); a new branch gets a
        stride-2 conv3×3+BN+ReLU from the lowest-resolution branch (`.{i}.0.0/1`); others None."""
        layers: list[Optional[nn.Module]] = []
        for i, ch in enumerate(cur):
            if i < len(prev):
                layers.append(None if ch == prev[i] else
                              ConvNormSequential(*_conv_bn(prev[i], ch, 3, 1, norm_cfg), nn.ReLU(inplace=True)))
            else:
                layers.append(nn.Sequential(
                    ConvNormSequential(*_conv_bn(prev[-1], ch, 3, 2, norm_cfg), nn.ReLU(inplace=True))))
        return nn.ModuleList(layers)

    # ---- arch resolution -------------------------------------------------------------------------
    @classmethod
    def resolve_arch(cls, arch: str | dict) -> dict[str, Any]:
        """Name, official pose `extra`, mmpose 1.x `extra` or classification MODEL.HRT cfg →
        canonical official pose `extra` (stage dicts completed from DEFAULTS, aliases renamed)."""
        if isinstance(arch, str):
            if arch not in cls.ARCHS:
                raise KeyError(f'{cls.__name__}: unknown arch {arch!r}; choose one of '
                               f'{sorted(cls.ARCHS)} or pass a dict of official arguments')
            overrides = cls.ARCHS[arch]
        elif isinstance(arch, dict):
            overrides = arch_from_classification_cfg(arch) if _is_classification_cfg(arch) else arch
        else:
            raise TypeError(f'{cls.__name__}: arch must be a name or a dict, got {type(arch).__name__}')
        unknown = sorted(set(overrides) - set(cls.DEFAULTS))
        if unknown:
            raise KeyError(f'{cls.__name__}: unknown arch keys {unknown}; valid keys (official pose '
                           f'`extra` names): {sorted(cls.DEFAULTS)}')
        resolved = copy.deepcopy(cls.DEFAULTS)
        for key, value in overrides.items():
            if key.startswith('stage'):
                resolved[key].update(_canonical_stage(key, value))
            else:
                resolved[key] = copy.deepcopy(value)
        _check_arch(resolved)
        return resolved

    @classmethod
    def micro_arch(cls, arch: str) -> dict[str, Any]:
        """Same windows, drop-path rate and block types; widths 8..32, one block per branch,
        two stage-4 modules (so the last-module fusion pruning is exercised)."""
        cfg = cls.resolve_arch(arch)
        micro = _arch_table(channels=(8, 16, 24, 32), heads=(1, 2, 3, 4), modules=(1, 1, 2),
                            window=cfg['stage2']['num_window_sizes'][0],
                            drop_path_rate=cfg['drop_path_rate'], blocks=1, stage1_planes=8)
        micro['stage1']['num_blocks'] = [1]
        return micro

    # ---- forward ---------------------------------------------------------------------------------
    def _stage1(self, x: torch.Tensor) -> torch.Tensor:
        x = conv_norm(x, self.conv1, self.norm1, self.relu)
        x = conv_norm(x, self.conv2, self.norm2, self.relu)
        return self.layer1(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """N×3×H×W (any H, W) → tuple of branch maps for `out_indices` (see `feature_info`)."""
        # Channels-last from the stem on (the transformer branches are channels-last already): oneDNN
        # runs the stem, stage-1 and transition convolutions several times faster that way on CPU (backward too).
        self.check_input(x)
        x = x.contiguous(memory_format=torch.channels_last)
        x = run_maybe_checkpointed(self._stage1, x, enabled=self.with_cp)
        return self._transformer_stages([x])

    def _transformer_stages(self, xs: list[torch.Tensor], entered: bool = False) -> tuple[torch.Tensor, ...]:
        """Stage 1's branch maps → the `out_indices` outputs: stages 2-4, each its transition then its
        modules. entered=True: `xs` went through transition1 already (lean mode streams stage 1 with it)."""
        for s in (2, 3, 4):
            if not (entered and s == 2):
                transition = getattr(self, f'transition{s - 1}')
                xs = [(xs[min(i, len(xs) - 1)] if t is None else t(xs[min(i, len(xs) - 1)]))
                      for i, t in enumerate(transition)]
            for module in getattr(self, f'stage{s}'):
                xs = module(xs)
        return tuple(xs[i] for i in self.out_indices)

    # ---- stages, init ----------------------------------------------------------------------------
    def stage_modules(self, stage: int) -> list[nn.Module]:
        if stage == -1:
            return [self.conv1, self.norm1, self.conv2, self.norm2]
        if stage == 0:
            return [self.layer1, self.transition1]
        if stage in (1, 2):
            return [getattr(self, f'stage{stage + 1}'), getattr(self, f'transition{stage + 1}')]
        if stage == 3:
            return [self.stage4]
        raise IndexError(f'HRFormer has stages -1..3, got {stage}')

    def slimming_spec(self) -> dict[str, Any]:
        """Channel groups for `slimmable=` (see `backbones.slimming`): the stem (`stem_channels`), the
        stage-1 bottleneck planes (output 4×), one count per branch (a multiple of its heads in every
        stage), ConvFFN hidden int(C·ratio), q/k/v and the projection input per head. BatchNorms keep
        statistics per width. (Stem and planes shrink together, so stage 1's projection shortcut exists at
        every width, as in the full model; a sub-network gives them one ratio: `ties`.)"""
        cfg = self.arch_cfg
        groups: dict[str, dict] = {
            'stem': dict(channels=self.conv1.out_channels, kwargs=['stem_channels']),
            'p': dict(channels=cfg['stage1']['num_channels'][0], arch=[('stage1', 'num_channels', 0)]),
            'p4': dict(of='p', factor=BOTTLENECK_EXPANSION)}
        tensors: dict[str, Any] = {'conv1': ('stem', None), 'norm1': 'stem', 'conv2': ('stem', 'stem'), 'norm2': 'stem'}
        for k, block in enumerate(self.layer1):
            p = f'layer1.{k}.'
            tensors.update({p + 'conv1': ('p', 'p4' if k else 'stem'), p + 'norm1': 'p', p + 'conv2': ('p', 'p'),
                            p + 'norm2': 'p', p + 'conv3': ('p4', 'p'), p + 'norm3': 'p4'})
            if block.downsample is not None:
                tensors.update({p + 'downsample.0': ('p4', 'stem'), p + 'downsample.1': 'p4'})
        scales: dict[str, str] = {}
        stages = [cfg[f'stage{s}'] for s in (2, 3, 4)]
        for b in range(4):
            heads = [sc['num_heads'][b] for sc in stages if b < len(sc['num_heads'])]
            groups[f'b{b}'] = dict(channels=stages[-1]['num_channels'][b], multiple=math.lcm(*heads),
                                   arch=[(f'stage{s}', 'num_channels', b) for s in (2, 3, 4) if b < s])
        prev = ['p4']
        for s in (2, 3, 4):
            cur = [f'b{b}' for b in range(s)]
            for i, layer in enumerate(getattr(self, f'transition{s - 1}')):
                if layer is not None:
                    p = f'transition{s - 1}.{i}.' + ('0.' if i >= len(prev) else '')
                    tensors.update({p + '0': (cur[i], prev[min(i, len(prev) - 1)]), p + '1': cur[i]})
            for m, module in enumerate(getattr(self, f'stage{s}')):
                for b, branch in enumerate(module.branches):
                    g = cur[b]
                    heads, ratio = stages[s - 2]['num_heads'][b], stages[s - 2]['num_mlp_ratios'][b]
                    h, mlp = f'{g}.h{heads}', f'{g}.mlp{ratio}'
                    groups.setdefault(h, dict(of=g, heads=heads))
                    groups.setdefault(mlp, dict(of=g, factor=ratio))
                    for k in range(len(branch)):
                        p = f'stage{s}.{m}.branches.{b}.{k}.'
                        tensors.update({p + 'norm1': g, p + 'attn.qkv': ([h, h, h], g), p + 'attn.proj': (g, h),
                                        p + 'norm2': g, p + 'ffn.fc1': (mlp, g), p + 'ffn.norm1': mlp,
                                        p + 'ffn.dw3x3': (mlp, None), p + 'ffn.norm2': mlp,
                                        p + 'ffn.fc2': (g, mlp), p + 'ffn.norm3': g})
                        scales[p + 'attn'] = h
                for i, fuse in enumerate(module.fuse_layers or ()):
                    for j in range(len(fuse or ())):
                        p = f'stage{s}.{m}.fuse_layers.{i}.{j}.'
                        if j > i:
                            tensors.update({p + '0': (cur[i], cur[j]), p + '1': cur[i]})
                        for step in range(i - j):
                            out = cur[i] if step == i - j - 1 else cur[j]
                            q = f'{p}{step}.'
                            tensors.update({q + '0': (cur[j], None), q + '1': cur[j], q + '2': (out, cur[j]),
                                            q + '3': out})
            prev = cur
        return dict(groups=groups, tensors=tensors, scales=scales, scale_key=('kwargs', 'qk_scale'),
                    outputs=[f'b{i}' for i in self.out_indices], ties=[('p', 'stem')])

    def reset_parameters_official(self) -> None:
        """Official classification init: PyTorch defaults, relative position tables trunc_normal(.02)."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear, nn.LayerNorm, nn.modules.batchnorm._BatchNorm)):
                m.reset_parameters()
            elif isinstance(m, WindowAttention):
                nn.init.trunc_normal_(m.relative_position_bias_table, std=0.02)

    def adapt_state_dict(self, state_dict: dict[str, torch.Tensor]) -> tuple[dict, list[str]]:
        """Resize relative position tables to this model's windows as the official segmentation
        loader does (win7 ImageNet weights → win13/win15): table (L, heads) → (1, heads, s, s) →
        bilinear (align_corners=False) to (t, t) → (t², heads)."""
        return resize_relative_position_tables(state_dict, self.state_dict(), mode='bilinear')


# ---------------------------------------------------------------------------------------------------
# variant table
# ---------------------------------------------------------------------------------------------------
def _arch_table(channels: Sequence[int], heads: Sequence[int], modules: Sequence[int], window: int,
                drop_path_rate: float, multiscale: bool = True, blocks: int = 2,
                stage1_planes: int = 64) -> dict[str, Any]:
    """One variant in the official pose `extra` structure (stage s has s branches)."""
    arch: dict[str, Any] = dict(drop_path_rate=drop_path_rate,
                                stage1=dict(num_modules=1, num_branches=1, block='BOTTLENECK',
                                            num_blocks=[2], num_channels=[stage1_planes]))
    for s, num_modules in zip((2, 3, 4), modules):
        arch[f'stage{s}'] = dict(num_modules=num_modules, num_branches=s, block='TRANSFORMER_BLOCK',
                                 num_blocks=[blocks] * s, num_channels=list(channels[:s]),
                                 num_heads=list(heads[:s]), num_mlp_ratios=[4] * s,
                                 num_window_sizes=[window] * s)
    arch['stage4']['multiscale_output'] = multiscale
    return arch


_S = dict(channels=(32, 64, 128, 256), heads=(1, 2, 4, 8), modules=(1, 4, 2))
_B = dict(channels=(78, 156, 312, 624), heads=(2, 4, 8, 16), modules=(1, 4, 2))

# Official pose constructor semantics: HRFormer-S extra without `multiscale_output` (= False).
HRFormer.DEFAULTS = _arch_table(**_S, window=7, drop_path_rate=0.0, multiscale=False)
# drop_path_rate: the ImageNet recipes (tiny/small 0.0, base 0.2) and the segmentation one (win13/15).
HRFormer.ARCHS = {
    'tiny': _arch_table(channels=(18, 36, 72, 144), heads=(1, 2, 4, 8), modules=(1, 3, 2), window=7,
                        drop_path_rate=0.0),
    'small': _arch_table(**_S, window=7, drop_path_rate=0.0),
    'base': _arch_table(**_B, window=7, drop_path_rate=0.2),
    'base-win13': _arch_table(**_B, window=13, drop_path_rate=0.2),
    'base-win15': _arch_table(**_B, window=15, drop_path_rate=0.2),
}
register_backbone(HRFormer)     # after the table: registration requires a non-empty ARCHS


def _canonical_stage(name: str, stage: dict) -> dict:
    """Stage dict with official pose key names; mmpose 1.x aliases renamed; unknown keys raise."""
    if not isinstance(stage, dict):
        raise TypeError(f'{name} must be a dict, got {type(stage).__name__}')
    out = {}
    for key, value in stage.items():
        key = _STAGE_ALIASES.get(key, key)
        if key not in _STAGE_KEYS:
            raise KeyError(f'HRFormer: unknown arch keys [{name}.{key}]; valid stage keys: '
                           f'{sorted(_STAGE_KEYS + tuple(_STAGE_ALIASES))}')
        if name == 'stage1' and key in _STAGE1_IGNORED:
            continue     # present in the official configs, ignored by the official code
        if key == 'block' and name != 'stage1':
            if value not in _TRANSFORMER_BLOCK_NAMES:
                raise ValueError(f'{name}.block must be one of {_TRANSFORMER_BLOCK_NAMES}, got {value!r}')
            value = 'TRANSFORMER_BLOCK'
        out[key] = list(value) if isinstance(value, (list, tuple)) else value
    return out


def _check_arch(cfg: dict) -> None:
    s1 = cfg['stage1']
    if s1['block'] != 'BOTTLENECK' or s1['num_modules'] != 1 or s1['num_branches'] != 1:
        raise ValueError(f'stage1 must be one module of BOTTLENECK blocks with one branch, got {s1}')
    for s in (2, 3, 4):
        sc = cfg[f'stage{s}']
        if sc['num_branches'] != s:
            raise ValueError(f'stage{s} must have {s} branches, got {sc["num_branches"]}')
        for key in ('num_blocks', 'num_channels', 'num_heads', 'num_mlp_ratios', 'num_window_sizes'):
            if len(sc[key]) != s:
                raise ValueError(f'stage{s}.{key} must have {s} entries, got {sc[key]}')
        if len(set(sc['num_blocks'])) != 1:
            raise ValueError(f'stage{s}.num_blocks must be equal across branches, got {sc["num_blocks"]}')
        if s > 2 and sc['num_channels'][:-1] != cfg[f'stage{s - 1}']['num_channels']:
            raise ValueError(f'stage{s}.num_channels must extend stage{s - 1}.num_channels')


_CLS_STAGE_KEYS = {'NUM_MODULES': 'num_modules', 'NUM_BRANCHES': 'num_branches', 'BLOCK': 'block',
                   'NUM_BLOCKS': 'num_blocks', 'NUM_CHANNELS': 'num_channels', 'NUM_HEADS': 'num_heads',
                   'NUM_MLP_RATIOS': 'num_mlp_ratios', 'NUM_WINDOW_SIZES': 'num_window_sizes'}
_CLS_STAGE_INFO_KEYS = ('NUM_RESOLUTIONS', 'ATTN_TYPES', 'FFN_TYPES')


def _is_classification_cfg(arch: dict) -> bool:
    return any(k in arch for k in ('STAGE1', 'STAGE2', 'STAGE3', 'STAGE4', 'DROP_PATH_RATE'))


def arch_from_classification_cfg(cfg: dict) -> dict[str, Any]:
    """Classification / openseg `MODEL.HRT` cfg (upper-case yacs keys) → official pose `extra`.

    NUM_RESOLUTIONS is informational (unused by the attention) and dropped; ATTN_TYPES must be
    'isa_local' and FFN_TYPES 'conv_mlp' in stages 2-4 (the only types the released models use);
    stage-1 heads/ratios/types are ignored as by the official code. The classification and openseg
    models always fuse every branch: `stage4.multiscale_output=True`.
    """
    unknown = sorted(set(cfg) - {'DROP_PATH_RATE', 'STAGE1', 'STAGE2', 'STAGE3', 'STAGE4'})
    if unknown:
        raise KeyError(f'HRFormer: unknown arch keys {unknown} in a classification MODEL.HRT cfg')
    extra: dict[str, Any] = {'drop_path_rate': float(cfg.get('DROP_PATH_RATE', 0.0))}
    for s in (1, 2, 3, 4):
        if f'STAGE{s}' not in cfg:
            continue
        stage = {}
        for key, value in cfg[f'STAGE{s}'].items():
            if key in _CLS_STAGE_INFO_KEYS:
                allowed = {'ATTN_TYPES': 'isa_local', 'FFN_TYPES': 'conv_mlp'}.get(key)
                if s > 1 and allowed and any(t != allowed for t in _flatten(value)):
                    raise ValueError(f'STAGE{s}.{key} other than {allowed!r} is not supported: {value}')
                continue
            if key not in _CLS_STAGE_KEYS:
                raise KeyError(f'HRFormer: unknown arch keys [STAGE{s}.{key}] in a classification cfg')
            stage[_CLS_STAGE_KEYS[key]] = value
        extra[f'stage{s}'] = stage
    extra.setdefault('stage4', {})['multiscale_output'] = True
    return extra


def _flatten(value: Any) -> list:
    if isinstance(value, (list, tuple)):
        return [v for item in value for v in _flatten(item)]
    return [value]


# ---------------------------------------------------------------------------------------------------
# checkpoint conversion
# ---------------------------------------------------------------------------------------------------
_QKV = re.compile(r'^(.*\.attn)\.attn\.([qkv])_proj\.(weight|bias)$')
_RENAMES = (
    (re.compile(r'^bn([12])\.'), r'norm\1.'),                                  # official stem
    (re.compile(r'^layer1\.(\d+)\.bn([123])\.'), r'layer1.\1.norm\2.'),        # official stage 1
    (re.compile(r'\.attn\.attn\.out_proj\.'), '.attn.proj.'),                   # official
    (re.compile(r'\.attn\.attn\.(qkv|proj|relative_position_bias_table)'), r'.attn.\1'),  # mmpose 1.x
    (re.compile(r'\.mlp\.(fc1|norm1|dw3x3|norm2|fc2|norm3)\.'), r'.ffn.\1.'),   # official
)
_DROPPED = re.compile(r'relative_position_index$')   # derived buffer, recomputed by the model
_KNOWN = re.compile(r'^(conv[12]\.|bn[12]\.|norm[12]\.|layer1\.|transition[123]\.|stage[234]\.|'
                    r'incre_modules\.|downsamp_modules\.|final_layer\.|classifier\.)')


@register_converter('hrformer')
def convert_hrformer(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official classification / openseg (`bnN`, q/k/v_proj, `mlp.`), official pose (mmpose 0.x
    fork: the same keys), mmpose 1.x (`attn.attn.qkv`, `ffn.`) or our layout → our layout.

    Per key: stem/stage-1 `bnN` → `normN`; q/k/v_proj concatenated (q, k, v) into `attn.qkv`;
    `out_proj`/mmpose `attn.attn.proj` → `attn.proj`; `mlp.` → `ffn.`; `relative_position_index`
    dropped (recomputed). Classification-head keys are kept (the loader ignores them).
    """
    from .weights import CheckpointError

    unknown = [k for k in state_dict if not _KNOWN.match(k)]
    if not state_dict or unknown:
        raise CheckpointError(f'not an HRFormer checkpoint: {len(unknown)} unrecognised keys, e.g. '
                              f'{unknown[:5] or list(state_dict)[:5]}; expected official HRFormer '
                              '(conv1/bn1/layer1/transitionN/stageN), mmpose 1.x or backbones keys')
    out: dict[str, torch.Tensor] = {}
    qkv_parts: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        if _DROPPED.search(key):
            continue
        match = _QKV.match(key)
        if match:
            prefix, part, kind = match.groups()
            qkv_parts.setdefault((prefix, kind), {})[part] = value
            continue
        for pattern, repl in _RENAMES:
            key = pattern.sub(repl, key)
        out[key] = value
    for (prefix, kind), parts in qkv_parts.items():
        if set(parts) != {'q', 'k', 'v'}:
            raise CheckpointError(f'{prefix}.attn: found only {sorted(parts)}_proj.{kind}; need q, k and v')
        out[f'{prefix}.qkv.{kind}'] = torch.cat([parts['q'], parts['k'], parts['v']], dim=0)
    return out
