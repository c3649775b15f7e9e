"""Twins-PCPVT and Twins-SVT (dense-prediction backbones).

Paper: Chu et al., "Twins: Revisiting the Design of Spatial Attention in Vision Transformers",
NeurIPS 2021, arXiv:2104.13840. Upstream: github.com/Meituan-AutoML/Twins @ c1ff671 (Apache-2.0):
`gvt.py` (classification: `CPVTV2` = PCPVT, `ALTGVT` = SVT), `segmentation/gvt.py`, `detection/gvt.py`.
Written from scratch; state-dict keys equal the official ones (= timm's), so official and timm
checkpoints load without renaming.

Structure, per stage i: patch embedding (conv k=s, then LayerNorm) → blocks → the PEG (residual
depthwise 3x3 conv) after block 0 → optional `norm_list[i]` (`extra_norm`, official dense SVT).
PCPVT uses global sub-sampled attention (GSA) in every block; SVT alternates locally-grouped window
attention (LSA, even blocks) with GSA (odd blocks).

Differences from the original:
* One model for classification weights and dense use: `forward` returns the stage maps (NCHW,
  strides 4/8/16/32, floor sizes as upstream); the classification `norm`/`head` are not built and
  are ignored when loading.
* LSA pads every stage to a multiple of the window and masks padded keys in every case. Upstream
  classification code cannot pad, detection code pads without a mask, and segmentation code (copied
  by mmseg) masks only when BOTH sides are padded (`mask[:, -0:, :]` marks the whole map).
* The masked pair bias is -inf on padded keys (upstream: -1000 on pairs of different padded-ness);
  valid outputs are identical. Attention runs through `scaled_dot_product_attention`.
* `extra_norm` (`out_norm=`) may be used with PCPVT too; as upstream, the norm sits on the main path,
  so it also normalises the next stage's input.
* Arbitrary input sizes H, W >= 32 (smaller maps would be smaller than the sub-sampling kernels).
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable, ClassVar, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._base import POSITIVE, POSITIVE_INT, DenseBackbone, Each, register_backbone, register_converter
from ._layers import (Mlp, add_residual, channels_last_on_cpu, drop_path_or_identity, drop_path_schedule,
                      linear, nchw_to_nlc, nlc_to_nchw, run_maybe_checkpointed)
from ._taps import Tap

__all__ = ['PCPVT', 'SVT', 'convert_twins']

PATCH_EMBED_EPS = 1e-5  # official PatchEmbed and GSA sub-sampling norms are plain nn.LayerNorm
OFFICIAL_BLOCK_NORM = 'functools.partial(torch.nn.modules.normalization.LayerNorm, eps=1e-06)'


def layer_norm_factory(spec: str | Callable[[int], nn.Module]) -> Callable[[int], nn.Module]:
    """Official `norm_layer` → a `dim -> nn.Module` factory.

    Accepts a callable, or a string naming LayerNorm as written in official kwargs
    (`'functools.partial(torch.nn.modules.normalization.LayerNorm, eps=1e-06)'`, `'LayerNorm'`,
    `'nn.LayerNorm'`); a missing `eps=` means PyTorch's default 1e-5.
    """
    if callable(spec):
        return spec
    if not isinstance(spec, str) or 'LayerNorm' not in spec:
        raise ValueError(f'norm_layer must be a LayerNorm spec or a callable, got {spec!r}')
    found = re.search(r'eps\s*=\s*([0-9.eE+-]+)', spec)
    eps = float(found.group(1)) if found else 1e-5
    return lambda dim: nn.LayerNorm(dim, eps=eps)


# ---- building blocks ------------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    """Conv with kernel = stride = `patch_size` (floor sizes, no padding), then LayerNorm (eps 1e-5).

    (N, C_in, H, W) → tokens (N, H//p * W//p, C) and the map size (H//p, W//p).
    """

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim, eps=PATCH_EMBED_EPS)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(channels_last_on_cpu(x))
        hw = (x.shape[2], x.shape[3])
        return self.norm(nchw_to_nlc(x)), hw


class PositionEncodingGenerator(nn.Module):
    """PEG (arXiv:2102.10882): tokens + depthwise 3x3 conv of their map; (N, H*W, C) → same.

    The conv sits in a one-element Sequential to keep the official key `proj.0.*`.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim))

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        feat = nlc_to_nchw(x, hw)
        return nchw_to_nlc(self.proj(feat) + feat)


def multihead_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: Optional[float],
                        dropout: float, key_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """softmax(q k^T * scale) v over (..., heads, L, head_dim) tensors; `key_mask` True = attend."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout, scale=scale)


class GlobalSubsampledAttention(nn.Module):
    """GSA (PVT's spatial-reduction attention): queries from every token, keys/values from the map
    sub-sampled by a conv with kernel = stride = `sr_ratio` (+ LayerNorm eps 1e-5) when sr_ratio > 1.

    (N, H*W, C) → (N, H*W, C). Keys `q`, `kv` (k rows first), `proj`, `sr`, `norm` (official).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False, qk_scale: Optional[float] = None,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, sr_ratio: int = 1):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim {dim} is not divisible by num_heads {num_heads}')
        self.num_heads = num_heads
        self.scale = qk_scale
        self.attn_drop = attn_drop
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=PATCH_EMBED_EPS)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        n, length, c = x.shape
        head_dim = c // self.num_heads
        q = linear(self.q, x).reshape(n, length, self.num_heads, head_dim).transpose(1, 2)
        source = x
        if self.sr_ratio > 1:
            source = self.norm(nchw_to_nlc(self.sr(nlc_to_nchw(x, hw))))
        k, v = linear(self.kv, source).reshape(n, -1, 2, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        out = multihead_attention(q, k, v, scale=self.scale,
                                  dropout=self.attn_drop if self.training else 0.0)
        return self.proj_drop(linear(self.proj, out.transpose(1, 2).reshape(n, length, c)))


class LocallyGroupedAttention(nn.Module):
    """LSA: multi-head attention inside non-overlapping `window_size`² windows.

    (N, H*W, C) → (N, H*W, C). The map is zero-padded right/bottom to a multiple of the window; padded
    tokens are never attended (key mask), whichever sides need padding. Keys `qkv`, `proj` (official).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False, qk_scale: Optional[float] = None,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, window_size: int = 7):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim {dim} is not divisible by num_heads {num_heads}')
        self.num_heads = num_heads
        self.scale = qk_scale
        self.attn_drop = attn_drop
        self.window_size = window_size
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _to_windows(self, x: torch.Tensor) -> torch.Tensor:
        """(N, Hp, Wp, ...) → (N, windows, ws*ws, ...), windows in row-major order."""
        n, hp, wp = x.shape[:3]
        ws = self.window_size
        x = x.reshape(n, hp // ws, ws, wp // ws, ws, *x.shape[3:]).transpose(2, 3)
        return x.reshape(n, (hp // ws) * (wp // ws), ws * ws, *x.shape[5:])

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        n, length, c = x.shape
        h, w = hw
        ws = self.window_size
        pad_b, pad_r = (-h) % ws, (-w) % ws
        x = F.pad(x.view(n, h, w, c), (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = h + pad_b, w + pad_r
        windows = (hp // ws) * (wp // ws)
        key_mask = None
        if pad_b or pad_r:
            valid = torch.zeros(1, hp, wp, dtype=torch.bool, device=x.device)
            valid[:, :h, :w] = True
            # (N * windows, 1, 1, ws*ws): per window, which keys are real tokens
            key_mask = self._to_windows(valid).reshape(windows, 1, 1, ws * ws).repeat(n, 1, 1, 1)
        head_dim = c // self.num_heads
        qkv = linear(self.qkv, self._to_windows(x))  # (N, windows, ws*ws, 3C)
        q, k, v = qkv.reshape(n * windows, ws * ws, 3, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        out = multihead_attention(q, k, v, scale=self.scale, key_mask=key_mask,
                                  dropout=self.attn_drop if self.training else 0.0)
        out = out.transpose(1, 2).reshape(n, hp // ws, wp // ws, ws, ws, c).transpose(2, 3)
        out = out.reshape(n, hp, wp, c)[:, :h, :w].reshape(n, length, c)
        return self.proj_drop(linear(self.proj, out))


class TwinsBlock(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)); x + mlp(norm2(x)). (N, H*W, C) → same.

    `window_size` None → GSA (with `sr_ratio`), else LSA with that window.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, *, qkv_bias: bool,
                 qk_scale: Optional[float], drop: float, attn_drop: float, drop_path: float,
                 norm_layer: Callable[[int], nn.Module], sr_ratio: int, window_size: Optional[int]):
        super().__init__()
        self.norm1 = norm_layer(dim)
        if window_size is None:
            self.attn = GlobalSubsampledAttention(dim, num_heads, qkv_bias, qk_scale, attn_drop, drop, sr_ratio)
        else:
            self.attn = LocallyGroupedAttention(dim, num_heads, qkv_bias, qk_scale, attn_drop, drop,
                                                window_size)
        self.drop_path = drop_path_or_identity(drop_path)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        # Taps on norm1(x) / norm2(x). LSA pads after its tap, but padded keys are masked and padded
        # queries cropped, so what reaches padded tokens never matters.
        self.mixer_tap = Tap()
        self.mlp_tap = Tap()

    def tap_consumers(self) -> dict[str, list[str]]:
        """GSA: `q` and the sub-sampling conv `sr` (kernel = stride, no padding) or `kv` (sr_ratio 1)."""
        if isinstance(self.attn, LocallyGroupedAttention):
            mixer = ['attn.qkv']
        else:
            mixer = ['attn.q', 'attn.sr' if self.attn.sr_ratio > 1 else 'attn.kv']
        return {'mixer_tap': mixer, 'mlp_tap': ['mlp.fc1']}

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = add_residual(x, self.drop_path(self.mixer_tap.feed(lambda y: self.attn(y, hw), x, self.norm1)), self.attn)
        return add_residual(x, self.drop_path(self.mlp_tap.feed(self.mlp, x, self.norm2)), self.mlp)


# ---- backbone -------------------------------------------------------------------------------------
class _TwinsBackbone(DenseBackbone):
    """Shared body of PCPVT and SVT; subclasses choose each block's attention (`_window_size`)."""

    FAMILY = 'twins'
    IGNORED_CHECKPOINT_KEYS = (r'^norm\.', r'^head\.')  # classification final norm and head
    OPTIONAL_MODEL_KEYS = (r'^norm_list\.',)  # dense-only; ImageNet checkpoints lack them
    NUM_STAGES = 4
    ARCH_ALIASES: ClassVar[dict[str, str]] = {}  # e.g. 'pcpvt-small' → 'small'
    MICRO: ClassVar[dict[str, Any]] = {}  # micro_arch overrides (tests)
    ARG_RULES = dict(sr_ratios=Each(POSITIVE_INT), wss=Each(POSITIVE_INT), qk_scale=POSITIVE)
    DIVISIBLE = (('embed_dims', 'num_heads'),)

    def __init__(self, arch: str | dict = 'small', *, out_indices: Sequence[int] = (0, 1, 2, 3),
                 out_norm: Optional[bool] = None, drop_path_rate: Optional[float] = None,
                 frozen_stages: int = -1, norm_eval: bool = False, with_cp: bool = False,
                 init_cfg: Optional[dict] = None):
        """Args:
            arch: variant name (see ARCHS) or a dict of official constructor arguments.
            out_indices: stages to output (0..3).
            out_norm: the official `extra_norm` (LayerNorm after every stage, on the main path);
                None takes the arch's value (SVT variants True, PCPVT False, as the dense code).
            drop_path_rate: stochastic depth; None takes the arch's `drop_path_rate`.
            frozen_stages: freeze stages -1 (first patch embedding) .. frozen_stages.
            norm_eval, with_cp, init_cfg: see `DenseBackbone`.
        """
        cfg = self.resolve_arch(arch)
        super().__init__(out_indices=out_indices, frozen_stages=frozen_stages, norm_eval=norm_eval,
                         with_cp=with_cp, init_cfg=init_cfg, in_channels=cfg['in_chans'])
        dims, depths = list(cfg['embed_dims']), list(cfg['depths'])
        num_stages = len(depths)
        for key in ('embed_dims', 'num_heads', 'mlp_ratios', 'sr_ratios') + self._extra_per_stage_keys():
            if len(cfg[key]) != num_stages:
                raise ValueError(f'{key} has {len(cfg[key])} entries, depths has {num_stages}')
        self.arch_cfg = cfg
        self.depths = depths
        extra_norm = cfg['extra_norm'] if out_norm is None else out_norm
        rate = cfg['drop_path_rate'] if drop_path_rate is None else drop_path_rate
        norm_layer = layer_norm_factory(cfg['norm_layer'])
        rates = drop_path_schedule(rate, depths)

        self.patch_embeds = nn.ModuleList()
        self.pos_drops = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for i in range(num_stages):
            in_ch = cfg['in_chans'] if i == 0 else dims[i - 1]
            self.patch_embeds.append(PatchEmbed(in_ch, dims[i], cfg['patch_size'] if i == 0 else 2))
            self.pos_drops.append(nn.Dropout(cfg['drop_rate']))
            self.blocks.append(nn.ModuleList(
                TwinsBlock(dims[i], cfg['num_heads'][i], cfg['mlp_ratios'][i], qkv_bias=cfg['qkv_bias'],
                           qk_scale=cfg['qk_scale'], drop=cfg['drop_rate'], attn_drop=cfg['attn_drop_rate'],
                           drop_path=rates[i][j], norm_layer=norm_layer, sr_ratio=cfg['sr_ratios'][i],
                           window_size=self._window_size(cfg, i, j))
                for j in range(depths[i])))
        self.pos_block = nn.ModuleList(PositionEncodingGenerator(d) for d in dims)
        self.norm_list = nn.ModuleList(norm_layer(d) for d in dims) if extra_norm else None
        strides = [cfg['patch_size'] * 2 ** i for i in range(num_stages)]
        self._feature_info = [dict(channels=dims[i], stride=strides[i], index=i) for i in self.out_indices]
        self.reset_parameters_official()

    @classmethod
    def resolve_arch(cls, arch: str | dict) -> dict[str, Any]:
        if isinstance(arch, str):
            arch = cls.ARCH_ALIASES.get(arch, arch)
        return super().resolve_arch(arch)

    @classmethod
    def micro_arch(cls, arch: str) -> dict[str, Any]:
        return dict(cls.ARCHS[cls.ARCH_ALIASES.get(arch, arch)], **cls.MICRO)

    @classmethod
    def _extra_per_stage_keys(cls) -> tuple[str, ...]:
        return ()

    def _window_size(self, cfg: dict, stage: int, block: int) -> Optional[int]:
        """LSA window of block `block` in `stage`, or None for GSA."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(N, 3, H, W), H, W >= 32 → one (N, C_i, H // s_i, W // s_i) map per out_indices entry."""
        self.check_input(x)
        outs = []
        for i, blocks in enumerate(self.blocks):
            x, hw = self.patch_embeds[i](x)
            x = self.pos_drops[i](x)
            for j, block in enumerate(blocks):
                x = run_maybe_checkpointed(block, x, hw, enabled=self.with_cp)
                if j == 0:
                    x = self.pos_block[i](x, hw)
            if self.norm_list is not None:
                x = self.norm_list[i](x)
            x = nlc_to_nchw(x, hw)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def stage_modules(self, stage: int) -> list[nn.Module]:
        """Stage -1: the first patch embedding; stage i: its blocks, PEG, extra norm and (i > 0) the
        patch embedding that opens it."""
        if stage == -1:
            return [self.patch_embeds[0]]
        modules = [self.blocks[stage], self.pos_block[stage]]
        if stage > 0:
            modules.insert(0, self.patch_embeds[stage])
        if self.norm_list is not None:
            modules.append(self.norm_list[stage])
        return modules

    def slimming_spec(self) -> dict[str, Any]:
        """Channel groups for `slimmable=` (see `backbones.slimming`): one free count per stage (a
        multiple of its heads), MLP hidden int(C·mlp_ratio), q/k/v and the projection input per head;
        the softmax scale sits in each attention's `scale` (arch `qk_scale`)."""
        cfg = self.arch_cfg
        groups: dict[str, dict] = {}
        tensors: dict[str, Any] = {}
        scales: dict[str, str] = {}
        for i, blocks in enumerate(self.blocks):
            s, h = f's{i}', f's{i}.h'
            groups[s] = dict(channels=cfg['embed_dims'][i], multiple=cfg['num_heads'][i], arch=[('embed_dims', i)])
            groups[h] = dict(of=s, heads=cfg['num_heads'][i])
            groups[s + '.mlp'] = dict(of=s, factor=cfg['mlp_ratios'][i])
            tensors[f'patch_embeds.{i}.proj'] = (s, f's{i - 1}' if i else None)
            tensors[f'patch_embeds.{i}.norm'] = s
            tensors[f'pos_block.{i}.proj.0'] = (s, None)
            if self.norm_list is not None:
                tensors[f'norm_list.{i}'] = s
            for j, block in enumerate(blocks):
                p = f'blocks.{i}.{j}.'
                tensors.update({p + 'norm1': s, p + 'norm2': s, p + 'attn.proj': (s, h),
                                p + 'mlp.fc1': (s + '.mlp', s), p + 'mlp.fc2': (s, s + '.mlp')})
                if isinstance(block.attn, LocallyGroupedAttention):
                    tensors[p + 'attn.qkv'] = ([h, h, h], s)
                else:
                    tensors.update({p + 'attn.q': (h, s), p + 'attn.kv': ([h, h], s)})
                    if block.attn.sr_ratio > 1:
                        tensors.update({p + 'attn.sr': (s, s), p + 'attn.norm': s})
                scales[p + 'attn'] = h
        return dict(groups=groups, tensors=tensors, scales=scales, scale_key=('arch', 'qk_scale'),
                    outputs=[f's{i}' for i in self.out_indices],
                    depths=[dict(blocks=f'blocks.{i}', arch=('depths', i)) for i in range(len(self.blocks))])

    def reset_parameters_official(self) -> None:
        """Official init: Linear trunc_normal(std .02) / bias 0; LayerNorm 1 / 0; Conv
        normal(0, sqrt(2 / fan_out)) with fan_out = k*k*out/groups, bias 0."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


_COMMON_DEFAULTS: dict[str, Any] = dict(
    patch_size=4, in_chans=3, embed_dims=[64, 128, 256, 512], num_heads=[1, 2, 4, 8],
    mlp_ratios=[4, 4, 4, 4], qkv_bias=False, qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0,
    drop_path_rate=0.0, norm_layer='torch.nn.LayerNorm', depths=[3, 4, 6, 3], sr_ratios=[8, 4, 2, 1],
    extra_norm=False)
"""Official constructor arguments (`CPVTV2`/`ALTGVT` of gvt.py + `extra_norm` of the dense code) with
the 4-stage defaults of `CPVTV2`; classification-only arguments (img_size, num_classes, block_cls)
are not accepted."""


class PCPVT(_TwinsBackbone):
    """Twins-PCPVT (official `CPVTV2`, `pcpvt_*`): GSA in every block, PEG after block 0 of each stage.

    Example:
        >>> import torch
        >>> model = PCPVT(arch=PCPVT.micro_arch('small')).eval()
        >>> [tuple(o.shape) for o in model(torch.randn(1, 3, 64, 96))]
        [(1, 16, 16, 24), (1, 32, 8, 12), (1, 48, 4, 6), (1, 64, 2, 3)]
    """

    ZOO_PREFIX = 'twins-pcpvt'
    DEFAULTS = dict(_COMMON_DEFAULTS)
    ARCHS = {}  # filled below (variant table)
    ARCH_ALIASES = {}
    MICRO = dict(embed_dims=[16, 32, 48, 64], num_heads=[1, 2, 3, 4], mlp_ratios=[2, 2, 2, 2],
                 depths=[1, 2, 2, 1])

    def _window_size(self, cfg: dict, stage: int, block: int) -> Optional[int]:
        return None


class SVT(_TwinsBackbone):
    """Twins-SVT (official `ALTGVT`, `alt_gvt_*`): per stage, blocks alternate LSA (window `wss[i]`,
    even blocks, starting with block 0) and GSA (odd blocks); PEG after block 0 of each stage.

    Example:
        >>> import torch
        >>> model = SVT(arch=SVT.micro_arch('small')).eval()
        >>> [tuple(o.shape) for o in model(torch.randn(1, 3, 64, 96))]
        [(1, 16, 16, 24), (1, 32, 8, 12), (1, 48, 4, 6), (1, 64, 2, 3)]
    """

    ZOO_PREFIX = 'twins-svt'
    DEFAULTS = dict(_COMMON_DEFAULTS, wss=[7, 7, 7, 7])
    ARCHS = {}
    ARCH_ALIASES = {}
    MICRO = dict(PCPVT.MICRO, depths=[2, 2, 2, 2], wss=[3, 3, 3, 3])  # 3-windows: padding at test sizes

    @classmethod
    def _extra_per_stage_keys(cls) -> tuple[str, ...]:
        return ('wss',)

    def _window_size(self, cfg: dict, stage: int, block: int) -> Optional[int]:
        return cfg['wss'][stage] if block % 2 == 0 else None


# ---- variant table --------------------------------------------------------------------------------
# gvt.py registered functions `pcpvt_{small,base,large}_v0` and `alt_gvt_{small,base,large}`;
# drop_path_rate is set by each recipe (configs), not by the variant.
_PCPVT_COMMON = dict(embed_dims=[64, 128, 320, 512], num_heads=[1, 2, 5, 8], mlp_ratios=[8, 8, 4, 4],
                     qkv_bias=True, norm_layer=OFFICIAL_BLOCK_NORM, sr_ratios=[8, 4, 2, 1], extra_norm=False)
PCPVT.ARCHS.update({
    'small': dict(_PCPVT_COMMON, depths=[3, 4, 6, 3]),
    'base': dict(_PCPVT_COMMON, depths=[3, 4, 18, 3]),
    'large': dict(_PCPVT_COMMON, depths=[3, 8, 27, 3]),
})
_SVT_COMMON = dict(mlp_ratios=[4, 4, 4, 4], qkv_bias=True, norm_layer=OFFICIAL_BLOCK_NORM,
                   wss=[7, 7, 7, 7], sr_ratios=[8, 4, 2, 1], extra_norm=True)
SVT.ARCHS.update({
    'small': dict(_SVT_COMMON, embed_dims=[64, 128, 256, 512], num_heads=[2, 4, 8, 16], depths=[2, 2, 10, 4]),
    'base': dict(_SVT_COMMON, embed_dims=[96, 192, 384, 768], num_heads=[3, 6, 12, 24], depths=[2, 2, 18, 2]),
    'large': dict(_SVT_COMMON, embed_dims=[128, 256, 512, 1024], num_heads=[4, 8, 16, 32],
                  depths=[2, 2, 18, 2]),
})
for _cls, _short in ((PCPVT, 'pcpvt'), (SVT, 'svt')):
    for _name in _cls.ARCHS:
        _cls.ARCH_ALIASES.update({f'{_short}-{_name}': _name, f'{_short}-{_name[0]}': _name})
register_backbone(PCPVT)  # after the table: registration requires a filled ARCHS
register_backbone(SVT)


# ---- converters -----------------------------------------------------------------------------------
_MMSEG_MARKERS = ('layers.', 'position_encodings.', '.projection.', 'attn.attn.in_proj_', 'ffn.layers.')
_OFFICIAL_MARKERS = ('blocks.', 'pos_block.', 'patch_embeds.')
_MMSEG_RENAMES = (  # (pattern, replacement) applied in order to mmseg keys
    (r'^patch_embeds\.(\d+)\.projection\.', r'patch_embeds.\1.proj.'),
    (r'^position_encodings\.(\d+)\.proj\.', r'pos_block.\1.proj.0.'),
    (r'^layers\.(\d+)\.(\d+)\.', r'blocks.\1.\2.'),
    (r'\.ffn\.layers\.0\.0\.', '.mlp.fc1.'),
    (r'\.ffn\.layers\.1\.', '.mlp.fc2.'),
    (r'\.attn\.attn\.out_proj\.', '.attn.proj.'),
)


@register_converter('twins')
def convert_twins(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Twins checkpoint → our layout (= official gvt.py = timm). Layout is detected from the keys:

    * official / timm (`blocks.*`, `pos_block.*`, `patch_embeds.*.proj`): returned unchanged;
    * mmseg (`twins2mmseg.py` output or an mmseg-trained backbone): `layers.` → `blocks.`,
      `patch_embeds.i.projection` → `.proj`, `position_encodings.i.proj` → `pos_block.i.proj.0`,
      `ffn.layers.0.0` / `ffn.layers.1` → `mlp.fc1` / `mlp.fc2`, `attn.attn.in_proj_*` split into
      `attn.q` (first C rows) and `attn.kv`, `attn.attn.out_proj` → `attn.proj`.
    Anything else raises `CheckpointError` naming the keys it saw.
    """
    from .weights import CheckpointError
    keys = list(state_dict)
    if any(marker in k for k in keys for marker in _MMSEG_MARKERS):
        return _convert_mmseg(state_dict)
    if any(k.startswith(_OFFICIAL_MARKERS) for k in keys):
        return dict(state_dict)
    raise CheckpointError(f'unrecognised Twins checkpoint layout: first keys {keys[:8]}; expected '
                          'official/timm keys (blocks.*, pos_block.*, patch_embeds.*) or mmseg keys '
                          '(layers.*, position_encodings.*, patch_embeds.*.projection.*)')


def _convert_mmseg(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        for pattern, repl in _MMSEG_RENAMES:
            key = re.sub(pattern, repl, key)
        fused = re.match(r'^(.*\.attn)\.attn\.in_proj_(weight|bias)$', key)
        if fused:
            prefix, kind = fused.groups()
            dim = value.shape[0] // 3
            out[f'{prefix}.q.{kind}'] = value[:dim]
            out[f'{prefix}.kv.{kind}'] = value[dim:]
        else:
            out[key] = value
    return out
