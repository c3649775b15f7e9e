"""FocalNet: Focal Modulation Networks (Yang et al., NeurIPS 2022, arXiv 2203.11926).

Original code: https://github.com/microsoft/FocalNet (MIT License, Copyright (c) 2022 Microsoft).
This is a clean re-implementation of the official classification model (`classification/focalnet.py`)
with the behaviour of the official dense backbone (`detection/mmdet/models/backbones/focalnet.py`):

* every code path of the classification model: conv stem (`use_conv_embed`), layerscale, post-LN,
  post-LN inside the modulation, `normalize_modulator`, any number of focal levels, per-stage focal
  windows and levels, and the isotropic models (one stage, patch 16);
* dense behaviour: zero padding right/bottom to the patch size before the stem and before every 2×2
  downsample (ceil-style sizes), stage outputs taken BEFORE the stage's downsample, one extra LayerNorm
  `norm{i}` per output (`out_norm=True`), strides 4/8/16/32 (16 for the isotropic models);
* the official dense loader's kernel growth (`adapt_state_dict`): focal kernels zero-padded (or
  cropped) centrally, `modulation.f` gate rows re-laid out for more focal levels;
* checkpoint layouts: official classification / dense / mmdet-2.x detector, timm, HF transformers.

Tensors are kept channels-last (N, H, W, C) inside the stages, as in the official code. In CPU
training the focal depth-wise convolutions (kernels >= 5) take their gradients as forward
convolutions (`_layers.depthwise_conv`): oneDNN's own depth-wise backward-weight is 5-15x slower.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._base import (POSITIVE, POSITIVE_INT, DenseBackbone, Each, Number, invalid_argument, register_backbone,
                    register_converter)
from ._layers import (Mlp, PatchEmbed, add_residual, conv_act, drop_path_or_identity, drop_path_schedule,
                      hooked, init_linear_or_layernorm, linear, run_maybe_checkpointed)
from ._taps import Tap
from .weights import CheckpointError

logger = logging.getLogger('backbones')

__all__ = ['FocalNet', 'convert_focalnet']


# ---------------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------------
class FocalModulation(nn.Module):
    """Focal modulation on (N, H, W, C) → (N, H, W, C).

    `f` projects to query (C), context (C) and L+1 gates; level l applies depthwise conv (kernel
    `focal_window + 2·l`) → GELU to level l−1's context; the global context is GELU(mean of the LAST
    level's context). Modulator = `h`(Σ gated contexts); out = `proj`(q · modulator) (+ `ln` before `proj`).
    """

    def __init__(self, dim: int, focal_window: int, focal_level: int, focal_factor: int = 2,
                 proj_drop: float = 0.0, use_postln_in_modulation: bool = False,
                 normalize_modulator: bool = False):
        super().__init__()
        self.focal_level = focal_level
        self.normalize_modulator = normalize_modulator
        self.f = nn.Linear(dim, 2 * dim + focal_level + 1)
        self.h = nn.Conv2d(dim, dim, kernel_size=1)
        self.act = nn.GELU()
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.kernel_sizes = [focal_window + focal_factor * level for level in range(focal_level)]
        self.focal_layers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim, bias=False), nn.GELU())
            for k in self.kernel_sizes)
        if use_postln_in_modulation:
            self.ln = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[-1]
        x = linear(self.f, x).permute(0, 3, 1, 2)  # channels-last NCHW view: no copy; convs keep that layout
        query, ctx, gates = torch.split(x, (channels, channels, self.focal_level + 1), dim=1)
        # without gradients the gated sum accumulates in place (no new activation-sized tensor per level)
        in_place = not (torch.is_grad_enabled() and x.requires_grad) and not hooked(self)
        ctx_all = 0
        for level, (conv, act) in enumerate(self.focal_layers):
            ctx = conv_act(ctx, conv, act)
            gate = gates[:, level:level + 1]
            ctx_all = ctx_all.addcmul_(ctx, gate) if in_place and level else ctx_all + ctx * gate
        ctx_global = self.act(ctx.mean(2, keepdim=True).mean(3, keepdim=True))
        if in_place and torch.is_tensor(ctx_all):
            ctx_all.addcmul_(ctx_global, gates[:, self.focal_level:])
        else:
            ctx_all = ctx_all + ctx_global * gates[:, self.focal_level:]
        if self.normalize_modulator:
            ctx_all = ctx_all / (self.focal_level + 1)
        modulator = self.h(ctx_all)
        out = (modulator.mul_(query) if in_place else query * modulator).permute(0, 2, 3, 1)
        if hasattr(self, 'ln'):
            out = self.ln(out)
        return self.proj_drop(linear(self.proj, out))


class FocalNetBlock(nn.Module):
    """Pre-LN `x + γ1·mod(norm1(x))`, `x + γ2·mlp(norm2(x))`; post-LN (`use_postln`) normalises the
    branch outputs instead: `x + γ1·norm1(mod(x))`, `x + γ2·norm2(mlp(x))`. γ = 1 without layerscale.
    (N, H, W, C) → (N, H, W, C)."""

    def __init__(self, dim: int, focal_window: int, focal_level: int, mlp_ratio: float = 4.0,
                 drop: float = 0.0, drop_path: float = 0.0, use_layerscale: bool = False,
                 layerscale_value: float = 1e-4, use_postln: bool = False,
                 use_postln_in_modulation: bool = False, normalize_modulator: bool = False):
        super().__init__()
        self.use_postln = use_postln
        self.use_layerscale = use_layerscale
        self.layerscale_value = layerscale_value
        self.norm1 = nn.LayerNorm(dim)
        self.modulation = FocalModulation(dim, focal_window, focal_level, proj_drop=drop,
                                          use_postln_in_modulation=use_postln_in_modulation,
                                          normalize_modulator=normalize_modulator)
        self.drop_path = drop_path_or_identity(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        if use_layerscale:
            self.gamma_1 = nn.Parameter(torch.full((dim,), float(layerscale_value)))
            self.gamma_2 = nn.Parameter(torch.full((dim,), float(layerscale_value)))
        self.mixer_tap = Tap()   # on the modulation's input (pre-LN: norm1(x); post-LN: x itself)
        self.mlp_tap = Tap()     # on the MLP's input (pre-LN: norm2(x); post-LN: x itself)

    def tap_consumers(self) -> dict[str, list[str]]:
        return {'mixer_tap': ['modulation.f'], 'mlp_tap': ['mlp.fc1']}

    def _scale(self, x: torch.Tensor, gamma_name: str) -> torch.Tensor:
        return getattr(self, gamma_name) * x if self.use_layerscale else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_postln:
            x = add_residual(x, self.drop_path(self._scale(self.norm1(self.mixer_tap.feed(self.modulation, x)),
                                                           'gamma_1')), self.norm1)
            return add_residual(x, self.drop_path(self._scale(self.norm2(self.mlp_tap.feed(self.mlp, x)), 'gamma_2')),
                                self.norm2)
        x = add_residual(x, self.drop_path(self._scale(self.mixer_tap.feed(self.modulation, x, self.norm1), 'gamma_1')),
                         self.modulation)
        return add_residual(x, self.drop_path(self._scale(self.mlp_tap.feed(self.mlp, x, self.norm2), 'gamma_2')),
                            self.mlp)


# ---------------------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------------------
class FocalNetStage(nn.Module):
    """`depth` blocks, then (except the last stage) the 2× downsample to the next stage's width.

    Returns (stage tokens before the downsample (N, H, W, C), input of the next stage).
    """

    def __init__(self, dim: int, depth: int, drop_paths: Sequence[float], out_dim: Optional[int],
                 use_conv_embed: bool, with_cp: bool = False, **block_kwargs: Any):
        super().__init__()
        self.with_cp = with_cp
        self.blocks = nn.ModuleList(FocalNetBlock(dim, drop_path=drop_paths[i], **block_kwargs)
                                    for i in range(depth))
        self.downsample = (PatchEmbed(dim, out_dim, 2, use_conv_embed, is_stem=False, with_norm=True)
                           if out_dim else None)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for block in self.blocks:
            x = run_maybe_checkpointed(block, x, enabled=self.with_cp)
        if self.downsample is None:
            return x, x
        return x, self.downsample(x.permute(0, 3, 1, 2))


# ---------------------------------------------------------------------------------------------------
# backbone
# ---------------------------------------------------------------------------------------------------
class FocalNet(DenseBackbone):
    """FocalNet dense backbone (hierarchical T/S/B/L/XL/H and isotropic T/S/B).

    Args:
        arch: variant name (`FocalNet.ARCHS`) or a dict of official constructor arguments
            (`embed_dim`, `depths`, `focal_levels`, `focal_windows`, `use_conv_embed`, ...).
        out_indices: stages to output (default: all).
        out_norm: a LayerNorm `norm{i}` on each output, as the official dense backbone.
        drop_path_rate: stochastic depth, linearly increasing over all blocks (official dense default 0.2).
        stem_conv_padding: padding of the 7×7 stride-4 stem when `use_conv_embed=True`. The official
            DENSE backbone uses 3 (default here); the official CLASSIFICATION model, timm and HF use 2,
            so 2 reproduces the classification model exactly (the L/XL/H ImageNet-22K weights were
            trained with 2).
        frozen_stages, norm_eval, with_cp, init_cfg: see `DenseBackbone`.

    `forward`: (N, 3, H, W) → tuple of (N, C_i, ceil(H/s_i), ceil(W/s_i)), one per `out_indices` entry.
    """

    FAMILY = 'focalnet'
    ZOO_PREFIX = 'focalnet'
    DEFAULTS = dict(patch_size=4, in_chans=3, embed_dim=96, depths=[2, 2, 6, 2], mlp_ratio=4.0,
                    drop_rate=0.0, patch_norm=True, focal_levels=[2, 2, 2, 2], focal_windows=[3, 3, 3, 3],
                    use_conv_embed=False, use_layerscale=False, layerscale_value=1e-4, use_postln=False,
                    use_postln_in_modulation=False, normalize_modulator=False)
    ARCHS: dict = {}  # filled below the class (variant table)
    IGNORED_CHECKPOINT_KEYS = (r'^head\.', r'^norm\.', r'^mim\.')
    OPTIONAL_MODEL_KEYS = (r'^norm\d+\.',)
    NUM_STAGES = 4
    ARG_RULES = dict(focal_levels=Each(POSITIVE_INT), focal_windows=Each(Number(1, odd=True)),
                     layerscale_value=POSITIVE, stem_conv_padding=Number(0, integer=True),
                     embed_dim=Each(POSITIVE_INT, scalar_ok=True))

    def __init__(self, arch: str | dict = 'tiny-srf', *, out_indices: Optional[Sequence[int]] = None,
                 out_norm: bool = True, drop_path_rate: float = 0.2, frozen_stages: int = -1,
                 norm_eval: bool = False, with_cp: bool = False, init_cfg: Optional[dict] = None,
                 stem_conv_padding: int = 3):
        cfg = self.resolve_arch(arch)
        depths = list(cfg['depths'])
        num_stages = len(depths)
        out_indices = tuple(range(num_stages)) if out_indices is None else tuple(out_indices)
        for name in ('focal_levels', 'focal_windows'):
            if len(cfg[name]) < num_stages:
                raise ValueError(f'FocalNet: {name} {cfg[name]} needs one entry per stage ({num_stages})')
        super().__init__(out_indices=out_indices, frozen_stages=frozen_stages, norm_eval=norm_eval,
                         with_cp=with_cp, init_cfg=init_cfg, in_channels=cfg['in_chans'])
        self.arch_cfg = cfg
        self.out_norm = out_norm
        dims = cfg['embed_dim']     # one number (stage i: embed_dim·2^i) or one width per stage
        dims = [int(dims) * 2 ** i for i in range(num_stages)] if isinstance(dims, int) else [int(d) for d in dims]
        if len(dims) != num_stages:
            raise invalid_argument('FocalNet', "arch['embed_dim']", cfg['embed_dim'],
                                   f'one width per stage ({num_stages} stages) or one number')
        self.num_features = dims
        self.patch_embed = PatchEmbed(cfg['in_chans'], dims[0], cfg['patch_size'], cfg['use_conv_embed'],
                                      is_stem=True, with_norm=cfg['patch_norm'],
                                      stem_conv_padding=stem_conv_padding)
        self.pos_drop = nn.Dropout(cfg['drop_rate'])
        schedule = drop_path_schedule(drop_path_rate, depths)
        self.layers = nn.ModuleList(
            FocalNetStage(dims[i], depths[i], schedule[i], out_dim=dims[i + 1] if i < num_stages - 1 else None,
                          use_conv_embed=cfg['use_conv_embed'], with_cp=with_cp,
                          focal_window=cfg['focal_windows'][i], focal_level=cfg['focal_levels'][i],
                          mlp_ratio=cfg['mlp_ratio'], drop=cfg['drop_rate'],
                          use_layerscale=cfg['use_layerscale'], layerscale_value=cfg['layerscale_value'],
                          use_postln=cfg['use_postln'],
                          use_postln_in_modulation=cfg['use_postln_in_modulation'],
                          normalize_modulator=cfg['normalize_modulator'])
            for i in range(num_stages))
        if out_norm:
            for i in out_indices:
                self.add_module(f'norm{i}', nn.LayerNorm(dims[i]))
        stem_stride = 4 if cfg['use_conv_embed'] else cfg['patch_size']
        self._feature_info = [dict(channels=dims[i], stride=stem_stride * 2 ** i, index=i)
                              for i in out_indices]
        self.reset_parameters_official()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(N, 3, H, W) → tuple of (N, C_i, h_i, w_i) for i in `out_indices`."""
        self.check_input(x)
        x = self.pos_drop(self.patch_embed(x))
        outs = []
        for i, stage in enumerate(self.layers):
            stage_out, x = stage(x)
            if i in self.out_indices:
                if self.out_norm:
                    stage_out = getattr(self, f'norm{i}')(stage_out)
                outs.append(stage_out.permute(0, 3, 1, 2).contiguous())
            if i >= max(self.out_indices):
                break
        return tuple(outs)

    def stage_modules(self, stage: int) -> list[nn.Module]:
        """Stage -1: the stem. Stage i: the downsample into stage i (i > 0) and its blocks. Output
        norms stay trainable, as in the official dense backbone."""
        return self._pyramid_stage_modules(stage)

    def slimming_spec(self) -> dict[str, Any]:
        """Channel groups for `slimmable=` (see `backbones.slimming`): one free count per stage (a narrow
        model's arch lists `embed_dim` per stage), MLP hidden int(C·mlp_ratio); `modulation.f` emits query
        (C), context (C) and focal_level+1 gates (kept). Depth: trailing blocks of a stage can be dropped."""
        groups: dict[str, dict] = {}
        for i in range(len(self.layers)):
            groups[f's{i}'] = dict(channels=self.num_features[i], arch=[('embed_dim', i)])
            groups[f's{i}.mlp'] = dict(of=f's{i}', factor=self.arch_cfg['mlp_ratio'])
        tensors: dict[str, Any] = {'patch_embed.proj': ('s0', None)}
        if self.patch_embed.norm is not None:
            tensors['patch_embed.norm'] = 's0'
        for i, stage in enumerate(self.layers):
            s = f's{i}'
            for j, block in enumerate(stage.blocks):
                p, levels = f'layers.{i}.blocks.{j}.', block.modulation.focal_level
                tensors.update({p + 'norm1': s, p + 'norm2': s, p + 'modulation.f': ([s, s, levels + 1], s),
                                p + 'modulation.h': (s, s), p + 'modulation.proj': (s, s),
                                p + 'mlp.fc1': (s + '.mlp', s), p + 'mlp.fc2': (s, s + '.mlp')})
                tensors.update({f'{p}modulation.focal_layers.{k}.0': (s, None) for k in range(levels)})
                if hasattr(block.modulation, 'ln'):
                    tensors[p + 'modulation.ln'] = s
                if block.use_layerscale:
                    tensors.update({p + 'gamma_1': s, p + 'gamma_2': s})
            if stage.downsample is not None:
                tensors[f'layers.{i}.downsample.proj'] = (f's{i + 1}', s)
                tensors[f'layers.{i}.downsample.norm'] = f's{i + 1}'
        if self.out_norm:
            tensors.update({f'norm{i}': f's{i}' for i in self.out_indices})
        return dict(groups=groups, tensors=tensors, outputs=[f's{i}' for i in self.out_indices],
                    depths=[dict(blocks=f'layers.{i}.blocks', arch=('depths', i)) for i in range(len(self.layers))])

    def reset_parameters_official(self) -> None:
        """Official init: Linear trunc_normal(std .02) / bias 0, LayerNorm 1/0, convs PyTorch default,
        layerscale = `layerscale_value`."""
        for m in self.modules():
            if init_linear_or_layernorm(m):
                continue
            if isinstance(m, nn.Conv2d):
                m.reset_parameters()
            elif isinstance(m, FocalNetBlock) and m.use_layerscale:
                nn.init.constant_(m.gamma_1, m.layerscale_value)
                nn.init.constant_(m.gamma_2, m.layerscale_value)

    @classmethod
    def micro_arch(cls, arch: str) -> dict[str, Any]:
        cfg = dict(cls.ARCHS[arch])
        if len(cfg['depths']) == 1:
            cfg.update(embed_dim=16, depths=[2])
        else:
            cfg.update(embed_dim=8, depths=[1, 1, 2, 1])
        return cfg

    def adapt_state_dict(self, state_dict: dict[str, torch.Tensor]) -> tuple[dict, list[str]]:
        """What the official dense loader (`detection/mmcv_custom/checkpoint.py`) adapts.

        * `modulation.focal_layers.{l}.0.weight` of another kernel size: zero-padded centrally (smaller
          checkpoint kernel) or centre-cropped (larger); no interpolation.
        * `modulation.f.{weight,bias}` with fewer focal levels in the checkpoint: rows [0, 2C) (query,
          context) and the checkpoint's level gates are copied, the last row (global gate) goes to the
          last row, the new levels' gate rows are 0.
        * focal levels the checkpoint lacks (`focal_layers.{l}` for l ≥ its level count) keep the
          model's current values (the official loader leaves them at their initialisation).
        """
        own = self.state_dict()
        out = dict(state_dict)
        adapted: list[str] = []
        for key, target in own.items():
            if key not in out:
                continue
            src = out[key]
            if src.shape == target.shape or src.ndim != target.ndim:
                continue
            if re.search(r'modulation\.focal_layers\.\d+\.0\.weight$', key) and src.shape[:2] == target.shape[:2]:
                out[key] = _resize_kernel_centred(src, target.shape[-1])
                adapted.append(key)
            elif re.search(r'modulation\.f\.(weight|bias)$', key) and src.shape[1:] == target.shape[1:]:
                if src.shape[0] > target.shape[0]:
                    raise ValueError(f'{key}: the checkpoint has more focal levels ({tuple(src.shape)}) than '
                                     f'the model ({tuple(target.shape)}); the official loader does not '
                                     'support fewer levels either')
                dim = (own[key.rsplit('.', 1)[0] + '.weight'].shape[1])
                out[key] = _relayout_gates(src, target.shape[0], dim)
                adapted.append(key)
        for key in own:
            match = re.match(r'(.*modulation\.)focal_layers\.(\d+)\.0\.weight$', key)
            if key in out or not match:
                continue
            gate_key = match.group(1) + 'f.weight'
            if gate_key in adapted:  # the level is new: keep the model's own kernel
                out[key] = own[key].clone()
                adapted.append(key)
        if adapted:
            logger.info('FocalNet: adapted %d tensors as the official dense loader does '
                        '(focal kernel size / focal level growth)', len(adapted))
        return out, adapted


# ---------------------------------------------------------------------------------------------------
# variant table (official hyper-parameters; research/models.md §1.1)
# ---------------------------------------------------------------------------------------------------
def _hier(embed_dim: int, depths: list[int], levels: int, window: int, **flags: Any) -> dict[str, Any]:
    return dict(embed_dim=embed_dim, depths=depths, focal_levels=[levels] * 4, focal_windows=[window] * 4,
                **flags)


_LARGE = dict(use_conv_embed=True, use_layerscale=True, use_postln=True)
_ISO = dict(patch_size=16, depths=[12], focal_levels=[3], focal_windows=[3])

ARCHS: dict[str, dict[str, Any]] = {
    'tiny-srf': _hier(96, [2, 2, 6, 2], 2, 3),
    'tiny-lrf': _hier(96, [2, 2, 6, 2], 3, 3),
    'small-srf': _hier(96, [2, 2, 18, 2], 2, 3),
    'small-lrf': _hier(96, [2, 2, 18, 2], 3, 3),
    'base-srf': _hier(128, [2, 2, 18, 2], 2, 3),
    'base-lrf': _hier(128, [2, 2, 18, 2], 3, 3),
    'large-fl3': _hier(192, [2, 2, 18, 2], 3, 5, **_LARGE),
    'large-fl4': _hier(192, [2, 2, 18, 2], 4, 3, **_LARGE, normalize_modulator=True),
    'xlarge-fl3': _hier(256, [2, 2, 18, 2], 3, 5, **_LARGE),
    'xlarge-fl4': _hier(256, [2, 2, 18, 2], 4, 3, **_LARGE),
    'huge-fl3': _hier(352, [2, 2, 18, 2], 3, 3, **_LARGE, use_postln_in_modulation=True),
    'huge-fl4': _hier(352, [2, 2, 18, 2], 4, 3, **_LARGE, use_postln_in_modulation=True),
    'tiny-iso': dict(embed_dim=192, **_ISO),
    'small-iso': dict(embed_dim=384, **_ISO),
    # focalnet_base_iso hard-codes layerscale and post-LN (classification/focalnet.py)
    'base-iso': dict(embed_dim=768, **_ISO, use_layerscale=True, use_postln=True),
}
FocalNet.ARCHS = ARCHS
register_backbone(FocalNet)


# ---------------------------------------------------------------------------------------------------
# checkpoint adaptation helpers and converters
# ---------------------------------------------------------------------------------------------------
def _resize_kernel_centred(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """(C, 1, k, k) → (C, 1, size, size): centred zero padding (grow) or centre crop (shrink)."""
    k = kernel.shape[-1]
    if size > k:
        pad = (size - k) // 2
        return F.pad(kernel, (pad, pad, pad, pad))
    start = (k - size) // 2
    return kernel[..., start:start + size, start:start + size].clone()


def _relayout_gates(src: torch.Tensor, rows: int, dim: int) -> torch.Tensor:
    """`modulation.f` weight/bias with L_ckpt+1 gate rows → `rows` = 2C + L_model + 1 rows."""
    out = src.new_zeros((rows,) + tuple(src.shape[1:]))
    old_levels = src.shape[0] - 2 * dim - 1
    out[:2 * dim + old_levels] = src[:2 * dim + old_levels]
    out[-1] = src[-1]
    return out


_TIMM_SQUEEZE = re.compile(r'(modulation\.(f|proj)|mlp\.fc[12])\.weight$')


def _from_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm `focalnet_*` layout → ours (the inverse of timm's `checkpoint_filter_fn`)."""
    out = {}
    for key, value in sd.items():
        new = re.sub(r'^stem\.', 'patch_embed.', key)
        new = re.sub(r'^layers\.(\d+)\.downsample\.',
                     lambda m: f'layers.{int(m.group(1)) - 1}.downsample.', new)
        new = re.sub(r'\.ls([12])\.gamma$', r'.gamma_\1', new)
        new = re.sub(r'\.norm([12])_post\.', r'.norm\1.', new)
        new = new.replace('.modulation.norm.', '.modulation.ln.')
        new = re.sub(r'^head\.fc\.', 'head.', new)
        if _TIMM_SQUEEZE.search(new) and value.ndim == 4:
            value = value.reshape(value.shape[0], value.shape[1])
        out[new] = value
    return out


def _from_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF transformers `FocalNetModel` / `FocalNetBackbone` / `...ForImageClassification` → ours."""
    rules = [
        (r'^focalnet\.', ''),
        (r'^embeddings\.patch_embeddings\.projection\.', 'patch_embed.proj.'),
        (r'^embeddings\.norm\.', 'patch_embed.norm.'),
        (r'^embeddings\.mask_token$', 'mim.mask_token'),
        (r'^decoder\.', 'mim.decoder.'),
        (r'^encoder\.stages\.(\d+)\.layers\.(\d+)\.', r'layers.\1.blocks.\2.'),
        (r'^encoder\.stages\.(\d+)\.downsample\.projection\.', r'layers.\1.downsample.proj.'),
        (r'^encoder\.stages\.(\d+)\.downsample\.norm\.', r'layers.\1.downsample.norm.'),
        (r'\.modulation\.projection_in\.', '.modulation.f.'),
        (r'\.modulation\.projection_context\.', '.modulation.h.'),
        (r'\.modulation\.projection_out\.', '.modulation.proj.'),
        (r'\.modulation\.layernorm\.', '.modulation.ln.'),
        (r'^layernorm\.', 'norm.'),
        (r'^classifier\.', 'head.'),
    ]
    out = {}
    for key, value in sd.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


@register_converter('focalnet')
def convert_focalnet(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Any supported FocalNet state dict → ours (= the official key names; dense out norms `norm{i}`).

    Detected layouts: ours / official classification / official dense (`patch_embed.proj.weight`),
    timm (`stem.proj.weight`), HF transformers (`[focalnet.]embeddings.patch_embeddings.projection.*`).
    Container and `backbone.`/`module.` prefixes are removed before (`weights.unwrap_state_dict`).
    """
    keys = list(state_dict)
    if 'patch_embed.proj.weight' in state_dict:
        return dict(state_dict)
    if 'stem.proj.weight' in state_dict:
        return _from_timm(state_dict)
    if any(re.match(r'^(focalnet\.)?embeddings\.patch_embeddings\.projection\.weight$', k) for k in keys):
        return _from_hf(state_dict)
    raise CheckpointError('unrecognised FocalNet checkpoint layout: expected `patch_embed.proj.weight` '
                          '(official/ours), `stem.proj.weight` (timm) or '
                          '`embeddings.patch_embeddings.projection.weight` (HF); first keys seen: '
                          f'{keys[:8]}')
