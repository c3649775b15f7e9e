"""Low-rank layers (MCUFormer): every `nn.Linear` and 1×1 convolution of any family factorised as
in→r (no bias) · r→r · r→out (with the bias), initialised from the SVD of the weights it replaces.

    W (out × in) = U S Vᵀ   →   first = V[:, :r]ᵀ (r × in), middle = diag(S[:r]) (r × r, a full trainable
                                 matrix), last = U[:, :r] (out × r), bias unchanged

r = max(1, int(ratio · min(in, out))) with one ratio per stage (MCUFormer searches 0.40–0.95). Ratio 1
keeps the full rank: the layer computes the same function (up to float rounding).

The mechanism keyword `lowrank=` works on every family constructor, `create_backbone` and configs:

    FocalNet(arch='tiny-srf', lowrank=dict(ratio=0.5))
    dict(type='backbones.PCPVT', arch='small', lowrank=dict(ratio=[0.9, 0.8, 0.6, 0.5]),
         init_cfg=dict(type='Pretrained', checkpoint='twins-pcpvt-small_in1k'))

The structure is factorised at construction (an optimizer built before `init_weights`, as mmengine's
Runner does, sees the final parameters). A pretrained checkpoint in the dense layout is factorised when
it is loaded (`load_pretrained` → `adapt_state_dict`, SVD of the checkpoint's weights), so the low-rank
model starts from the pretrained one whatever the order; a checkpoint already in the low-rank layout
loads as is. Without a checkpoint the factors come from the SVD of the family's own initialisation.

With `slimmable=` (Scala, `backbones.slimming`) the two compose on every family: the low-rank layers are
built first (this mechanism runs before `slimmable=`), and the slimming plan slices a low-rank layer where
it would slice the dense one (input channels → columns of `first`, output channels → rows of `last` and
the bias, the same Isolated Activation side). A sub-network also takes a rank ratio ρ per stage
(`set_width(model, width, depths, ranks=[...])`): each low-rank layer then uses its first k components
(rows of `first`, the k×k top-left block of `middle`, columns of `last`; the SVD orders them by singular
value) with k = rank_for(ρ, active in, active out) — the rank a natively narrow model built with
`lowrank=dict(ratio=ρ)` has, so `export_width` is exact and its config carries `lowrank=dict(ratio=[...])`.
`skip_larger=True` is refused with `slimmable=` (which layers stay dense would depend on the width).

`python -m backbones.lowrank VARIANT... [--ratios 1 0.9 0.7 0.5 0.3] [--checkpoint C]` (or
`backbones lowrank ...`) prints output error, parameters and predicted peak memory against the ratio.
"""
from __future__ import annotations

import argparse
import copy
import re
import sys
import types
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._base import DenseBackbone, register_mechanism


class LowRankLinear(nn.Module):
    """(..., in_features) → (..., out_features) as `last @ middle @ first` (rank r) plus bias."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True,
                 device: Any = None, dtype: Optional[torch.dtype] = None):
        super().__init__()
        if not 1 <= rank:
            raise ValueError(f'rank: expected >= 1, got {rank}')
        kw = dict(device=device, dtype=dtype)
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.first = nn.Parameter(torch.empty(rank, in_features, **kw))
        self.middle = nn.Parameter(torch.empty(rank, rank, **kw))
        self.last = nn.Parameter(torch.empty(out_features, rank, **kw))
        self.bias = nn.Parameter(torch.empty(out_features, **kw)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(F.linear(x, self.first), self.middle), self.last, self.bias)

    def dense_weight(self) -> torch.Tensor:
        """The (out, in) matrix this layer applies."""
        return self.last @ self.middle @ self.first

    @torch.no_grad()
    def init_from(self, weight: torch.Tensor, bias: Optional[torch.Tensor], svd_cache: Optional[dict] = None) -> None:
        """Factors from the SVD of `weight` (out, in[, 1, 1]) (float64), bias copied."""
        first, middle, last = svd_factors(weight, self.rank, svd_cache)
        if self.first.device.type != 'meta':
            self.first.copy_(first)
            self.middle.copy_(middle)
            self.last.copy_(last)
            if self.bias is not None and bias is not None:
                self.bias.copy_(bias)

    def extra_repr(self) -> str:
        return f'in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, ' \
               f'bias={self.bias is not None}'


class LowRankConv1x1(LowRankLinear):
    """A 1×1 convolution (N, in, H, W) → (N, out, H', W') (stride of the original) through rank r."""

    def __init__(self, in_channels: int, out_channels: int, rank: int, bias: bool = True,
                 stride: tuple[int, int] = (1, 1), device: Any = None, dtype: Optional[torch.dtype] = None):
        super().__init__(in_channels, out_channels, rank, bias, device, dtype)
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, tuple(stride)
        self.kernel_size = (1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, self.first[:, :, None, None], None, self.stride)
        y = F.conv2d(y, self.middle[:, :, None, None])
        return F.conv2d(y, self.last[:, :, None, None], self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f', stride={self.stride}'


def svd_factors(weight: torch.Tensor, rank: int, cache: Optional[dict] = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(first (r, in), middle diag(S) (r, r), last (out, r)) of a (out, in, ...) weight, in its dtype.
    `cache`: a dict for this one weight, keeping its SVD for other ranks."""
    weight = weight.reshape(weight.shape[0], -1)
    if weight.device.type == 'meta':
        return weight.new_empty(rank, weight.shape[1]), weight.new_empty(rank, rank), weight.new_empty(
            weight.shape[0], rank)
    if cache is not None and 'usv' in cache:
        u, s, vh = cache['usv']
    else:
        u, s, vh = thin_svd(weight.detach().to(torch.float64))
        if cache is not None:
            cache['usv'] = (u, s, vh)
    return (vh[:rank].to(weight.dtype), torch.diag(s[:rank]).to(weight.dtype), u[:, :rank].to(weight.dtype))


def thin_svd(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(U, S descending, Vᵀ) of a float64 (m, n) matrix through the eigen-decomposition of its smaller
    Gram matrix (several times faster than LAPACK's SVD on CPU; float64 keeps the singular values to
    ~1e-8 of the largest). Directions with a zero singular value get zero vectors: they contribute
    nothing to U S Vᵀ, which reproduces w."""
    wide = w.shape[0] <= w.shape[1]
    gram = w @ w.T if wide else w.T @ w
    eigenvalues, vectors = torch.linalg.eigh(gram)
    eigenvalues, vectors = eigenvalues.flip(0), vectors.flip(1)
    s = eigenvalues.clamp_min(0).sqrt()
    inverse = torch.where(s > s[0] * 1e-12, 1 / s, torch.zeros_like(s))
    if wide:                                  # vectors = U: Vᵀ = S⁻¹ Uᵀ w
        return vectors, s, inverse[:, None] * (vectors.T @ w)
    return (w @ vectors) * inverse, s, vectors.T


def factorisable(module: nn.Module) -> bool:
    """A plain nn.Linear, or a plain 1×1 nn.Conv2d (one group, no padding, no dilation effect)."""
    if type(module) is nn.Linear:
        return True
    return (type(module) is nn.Conv2d and module.kernel_size == (1, 1) and module.groups == 1
            and module.padding in ((0, 0), 'valid') and module.padding_mode == 'zeros')


def rank_for(ratio: float, in_features: int, out_features: int) -> int:
    """MCUFormer's rank: int(ratio · min(in, out)), at least 1."""
    return max(1, int(ratio * min(in_features, out_features) + 1e-9))


def _dense_shape(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    return module.in_channels, module.out_channels


def lowrank_of(module: nn.Module, rank: int, svd_cache: Optional[dict] = None) -> LowRankLinear:
    """The low-rank replacement of a factorisable module, initialised from its weights."""
    factory = dict(device=module.weight.device, dtype=module.weight.dtype)
    bias = module.bias is not None
    if isinstance(module, nn.Linear):
        layer = LowRankLinear(module.in_features, module.out_features, rank, bias, **factory)
    else:
        layer = LowRankConv1x1(module.in_channels, module.out_channels, rank, bias, module.stride, **factory)
    layer.init_from(module.weight, module.bias, svd_cache)
    return layer


# ---------------------------------------------------------------------------------------------------
# the mechanism
# ---------------------------------------------------------------------------------------------------
def parse_lowrank(cfg: Any, num_stages: int) -> dict:
    """`lowrank=` value → dict(ratio=[per stage], skip_larger=bool). Accepts a ratio, a list of
    per-stage ratios, or dict(ratio=..., skip_larger=False)."""
    if isinstance(cfg, (int, float, list, tuple)):
        cfg = dict(ratio=cfg)
    if not isinstance(cfg, dict):
        raise TypeError(f'lowrank: expected a ratio, a list of per-stage ratios or dict(ratio=...), got {cfg!r}')
    unknown = sorted(set(cfg) - {'ratio', 'skip_larger'})
    if unknown or 'ratio' not in cfg:
        raise ValueError(f"lowrank: accepted keys are 'ratio' (required) and 'skip_larger'; got {sorted(cfg)}")
    ratio = cfg['ratio']
    ratios = [ratio] * num_stages if isinstance(ratio, (int, float)) else list(ratio)
    if len(ratios) != num_stages:
        raise ValueError(f'lowrank: ratio needs one value per stage ({num_stages}), got {ratio!r}')
    for r in ratios:
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= 1:
            raise ValueError(f'lowrank: every ratio must be in (0, 1], got {ratio!r}')
    return dict(ratio=[float(r) for r in ratios], skip_larger=bool(cfg.get('skip_larger', False)))


def _num_stages(model: DenseBackbone) -> int:
    cfg = getattr(model, 'arch_cfg', None)
    return model.num_stages_of(cfg) if cfg is not None and hasattr(model, 'num_stages_of') else model.NUM_STAGES


def _stage_of_modules(model: DenseBackbone, num_stages: int) -> dict[int, int]:
    """id(module) → stage index for every module under a stage (the stem, stage -1, counts as stage 0)."""
    owner: dict[int, int] = {}
    for stage in range(-1, num_stages):
        try:
            roots = model.stage_modules(stage)
        except (IndexError, NotImplementedError):
            continue
        for root in roots:
            for m in root.modules():
                owner.setdefault(id(m), max(stage, 0))
    return owner


@register_mechanism('lowrank', order=5)
def apply_lowrank(model: DenseBackbone, cfg: Any, svd_cache: Optional[dict] = None) -> None:
    """Replace every factorisable layer by its low-rank form (per-stage ratio); layers outside any stage
    keep the last stage's ratio. `skip_larger`: keep a layer dense when the factors would hold more
    parameters than it. Records `model.lowrank_cfg`, `model.lowrank_layers` (name → rank) and
    `model.lowrank_stages` (name → the stage whose ratio it takes).
    `svd_cache` (layer name → dict): share SVDs between calls on copies of one model (`fit_budget`).
    Runs before `slimmable=` (order 5 < 10), whose plan then slices the low-rank layers."""
    if getattr(model, '_slim_state', None) is not None:
        raise NotImplementedError(f'{type(model).__name__}: lowrank= on a model already built slimmable; pass '
                                  'both keywords to the constructor (the low-rank layers are built first)')
    num_stages = _num_stages(model)
    spec = parse_lowrank(cfg, num_stages)
    owner = _stage_of_modules(model, num_stages)
    replaced: dict[str, int] = {}
    stages: dict[str, int] = {}
    for name, module in list(model.named_modules()):
        if not name or not factorisable(module):
            continue
        d_in, d_out = _dense_shape(module)
        stage = owner.get(id(module), num_stages - 1)
        rank = rank_for(spec['ratio'][stage], d_in, d_out)
        if spec['skip_larger'] and rank * (d_in + d_out + rank) >= d_in * d_out:
            continue
        parent_name, _, child = name.rpartition('.')
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, lowrank_of(module, rank, None if svd_cache is None else svd_cache.setdefault(name, {})))
        replaced[name] = rank
        stages[name] = stage
    model.lowrank_cfg = spec
    model.lowrank_layers = replaced
    model.lowrank_stages = stages
    model.adapt_state_dict = types.MethodType(_adapt_with_factorisation, model)


def _adapt_with_factorisation(self: DenseBackbone, state_dict: dict) -> tuple[dict, list[str]]:
    """The family's own adaptation, then dense weights of factorised layers → SVD factors."""
    state_dict, adapted = type(self).adapt_state_dict(self, state_dict)
    state_dict = dict(state_dict)
    for name, rank in self.lowrank_layers.items():
        key = f'{name}.weight'
        if key in state_dict and f'{name}.first' not in state_dict:
            weight = state_dict.pop(key)
            first, middle, last = svd_factors(weight.float(), rank)
            state_dict.update({f'{name}.first': first, f'{name}.middle': middle, f'{name}.last': last})
            adapted.append(f'{key} → rank-{rank} factors')
    return state_dict, adapted


# ---------------------------------------------------------------------------------------------------
# the table: error, parameters, memory against the ratio
# ---------------------------------------------------------------------------------------------------
def demo_batch(size: tuple[int, int], count: int = 2, seed: int = 0) -> torch.Tensor:
    """`count` demo images (backbones.demo_data) at `size`, ImageNet-normalised: (count, 3, H, W)."""
    import numpy as np
    from .demo_data import make_image
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        img, _, _ = make_image(rng, max(size))
        images.append(torch.from_numpy(np.ascontiguousarray(img[:size[0], :size[1]])).permute(2, 0, 1).float())
    mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    return (torch.stack(images) - mean) / std


def feature_error(reference: Sequence[torch.Tensor], outputs: Sequence[torch.Tensor]) -> float:
    """Mean over outputs of ‖out − ref‖ / ‖ref‖."""
    errors = [((o - r).norm() / r.norm().clamp_min(1e-12)).item() for r, o in zip(reference, outputs)]
    return sum(errors) / len(errors)


def _dense_reference(cls: type, arch: str, checkpoint: Optional[str], size: tuple[int, int], images: int
                     ) -> tuple[nn.Module, torch.Tensor, tuple[torch.Tensor, ...]]:
    """The dense model (random init, or `checkpoint`), demo images at `size` and its features of them."""
    from .weights import load_pretrained
    dense = cls(arch=arch, drop_path_rate=0.0).eval()
    if checkpoint:
        load_pretrained(dense, checkpoint)
    x = demo_batch(size, images)
    with torch.inference_mode():
        return dense, x, dense(x)


def table_rows(variant: str, ratios: Sequence[float | Sequence[float]], size: tuple[int, int] = (224, 224),
               checkpoint: Optional[str] = None, skip_larger: bool = False, images: int = 2) -> list[dict]:
    """For each ratio: feature error on demo images vs the dense model (same weights), parameters and
    the memory model's predicted peak at `size`."""
    from ._factory import _zoo
    from .memory import report_of
    cls, arch = _zoo()[variant]
    dense, x, reference = _dense_reference(cls, arch, checkpoint, size, images)
    svd_cache: dict = {}
    dense_report = report_of(dense, variant, size)
    rows = [dict(variant=variant, ratio='dense', params=sum(p.numel() for p in dense.parameters()),
                 error=0.0, weight_bytes=dense_report.weight_bytes,
                 peak_bytes=dense_report.predicted_peak_bytes, total_bytes=dense_report.predicted_total_bytes)]
    for ratio in ratios:
        model = copy.deepcopy(dense)
        apply_lowrank(model, dict(ratio=ratio, skip_larger=skip_larger), svd_cache)
        with torch.inference_mode():
            error = feature_error(reference, model(x))
        report = report_of(model, variant, size)
        rows.append(dict(variant=variant, ratio=ratio, params=sum(p.numel() for p in model.parameters()),
                         error=error, weight_bytes=report.weight_bytes, peak_bytes=report.predicted_peak_bytes,
                         total_bytes=report.predicted_total_bytes))
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f'{"variant":<20} {"ratio":<20} {"params M":>9} {"rel. error":>10} {"weights MiB":>11} '
             f'{"act. peak MiB":>13} {"total MiB":>9}']
    for r in rows:
        lines.append(f'{r["variant"]:<20} {str(r["ratio"]):<20} {r["params"] / 1e6:>9.2f} {r["error"]:>10.2e} '
                     f'{r["weight_bytes"] / 2 ** 20:>11.1f} {r["peak_bytes"] / 2 ** 20:>13.1f} '
                     f'{r["total_bytes"] / 2 ** 20:>9.1f}')
    return '\n'.join(lines)


# ---------------------------------------------------------------------------------------------------
# fit to a memory budget
# ---------------------------------------------------------------------------------------------------
FIT_RATIOS = (0.9, 0.75, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
FIT_SCALES = (1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25)
_UNITS = {'': 1, 'b': 1, 'k': 1024, 'kb': 1024, 'kib': 1024, 'm': 1024 ** 2, 'mb': 1024 ** 2, 'mib': 1024 ** 2,
          'g': 1024 ** 3, 'gb': 1024 ** 3, 'gib': 1024 ** 3}


def parse_budget(text: str | int) -> int:
    """'256MB' / '256MiB' / '1.5GB' / 1048576 → bytes (K/M/G are powers of 1024)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        match = re.fullmatch(r'\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*', str(text))
        if not match or match.group(2).lower() not in _UNITS:
            raise ValueError(f'--budget: expected a size such as 256MB, 1.5GB or 300000 (bytes), got {text!r}')
        value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value <= 0:
        raise ValueError(f'--budget: must be positive, got {text!r}')
    return value


def _candidate_sizes(size: tuple[int, int], allow_resize: bool) -> list[tuple[int, int]]:
    if not allow_resize:
        return [size]
    sizes = []
    for scale in FIT_SCALES:
        h, w = (max(32, int(round(d * scale / 32)) * 32) for d in size)
        if (h, w) not in sizes:
            sizes.append((h, w))
    return sizes


def _resized_error(reference: Sequence[torch.Tensor], outputs: Sequence[torch.Tensor]) -> float:
    """feature_error after resizing each output to its reference's grid (bilinear)."""
    resized = [o if o.shape == r.shape else F.interpolate(o, size=r.shape[-2:], mode='bilinear',
                                                            align_corners=False)
               for r, o in zip(reference, outputs)]
    return feature_error(reference, resized)


def fit_budget(variant: str, budget: int, size: tuple[int, int], allow_resize: bool = False,
               checkpoint: Optional[str] = None, images: int = 2, ratios: Sequence[float] = FIT_RATIOS,
               log=print) -> dict:
    """The plan (rank ratio or dense, input size) whose predicted total peak (weights + input +
    activations, `backbones.memory`) fits `budget`, with the smallest feature error on demo images
    against the dense model at `size`. Per input size only the least compressed fitting plan (ratios
    tried from dense downwards) is evaluated. Raises ValueError when none fits."""
    from ._factory import _zoo
    from .memory import _state_bytes, build_for_memory, report_of
    zoo = _zoo()
    if variant not in zoo:
        raise KeyError(f'variant: unknown backbone {variant!r}; choose one of {sorted(zoo)}')
    cls, arch = zoo[variant]
    sizes = _candidate_sizes(size, allow_resize)
    leanest = dict(ratio=min(ratios), skip_larger=True)
    floor = _state_bytes(build_for_memory(variant, lowrank=leanest)) + 3 * 4 * sizes[-1][0] * sizes[-1][1]
    if floor > budget:                        # weights and input alone exceed it: nothing to trace
        raise ValueError(f'--budget: no plan fits {budget / 2 ** 20:.1f} MiB for {variant} at {size[0]}x{size[1]}'
                         f'{"" if allow_resize else " (--allow-resize not given)"}; the smallest plan needs '
                         f'more than {floor / 2 ** 20:.1f} MiB for its weights and input alone')
    plans = []
    smallest = None
    for hw in sizes:
        for ratio in (None,) + tuple(ratios):
            lowrank = None if ratio is None else dict(ratio=ratio, skip_larger=True)
            report = report_of(build_for_memory(variant, lowrank=lowrank), variant, hw, 1, False, lowrank)
            total = report.predicted_total_bytes
            smallest = total if smallest is None else min(smallest, total)
            log(f'  plan {hw[0]}x{hw[1]} {"dense" if ratio is None else f"ratio {ratio}"}: predicted total '
                f'{total / 2 ** 20:.1f} MiB {"fits" if total <= budget else "over"}')
            if total <= budget:      # the least compressed plan that fits at this size (error grows as r falls)
                plans.append(dict(size=hw, lowrank=lowrank, predicted_total_bytes=total,
                                  predicted_peak_bytes=report.predicted_peak_bytes, weight_bytes=report.weight_bytes))
                break
    if not plans:
        raise ValueError(f'--budget: no plan fits {budget / 2 ** 20:.1f} MiB for {variant} at {size[0]}x{size[1]}'
                         f'{"" if allow_resize else " (--allow-resize not given)"}; the smallest plan needs '
                         f'{smallest / 2 ** 20:.1f} MiB (weights + input + activations)')
    dense, x, reference = _dense_reference(cls, arch, checkpoint, size, images)
    svd_cache: dict = {}
    for plan in plans:
        model = dense
        if plan['lowrank'] is not None:
            model = copy.deepcopy(dense)
            apply_lowrank(model, plan['lowrank'], svd_cache)
        xs = x if plan['size'] == size else F.interpolate(x, size=plan['size'], mode='bilinear', align_corners=False)
        with torch.inference_mode():
            plan['error'] = _resized_error(reference, model(xs))
        plan['model'] = model
    best = min(plans, key=lambda p: (p['error'], -p['size'][0] * p['size'][1]))
    return best


def write_fit(variant: str, plan: dict, budget: int, out_dir: str) -> tuple[str, str]:
    """Checkpoint (low-rank layout) and a config fragment building it; returns their paths."""
    import os
    from ._factory import _zoo
    cls, arch = _zoo()[variant]
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f'{variant}_fit-{budget // 2 ** 20}MiB')
    meta = dict(variant=variant, size=list(plan['size']), budget_bytes=budget, error=plan['error'],
                predicted_total_bytes=plan['predicted_total_bytes'], lowrank=plan['lowrank'])
    torch.save({'state_dict': plan['model'].state_dict(), 'meta': meta}, stem + '.pth')
    kwargs = '' if plan['lowrank'] is None else f"\n    lowrank={plan['lowrank']!r},"
    with open(stem + '.py', 'w') as f:
        f.write(f"# `backbones fit {variant} --budget {budget // 2 ** 20}MiB`: predicted total peak "
                f"{plan['predicted_total_bytes'] / 2 ** 20:.1f} MiB at {plan['size'][0]}x{plan['size'][1]}, "
                f"feature error {plan['error']:.3g} on the demo images\n"
                f"input_size = {tuple(plan['size'])!r}\n"
                f"backbone = dict(\n    type='backbones.{cls.__name__}',\n    arch={arch!r},{kwargs}\n"
                f"    init_cfg=dict(type='Pretrained', checkpoint={os.path.abspath(stem + '.pth')!r}))\n")
    return stem + '.py', stem + '.pth'


def cmd_fit(args: argparse.Namespace) -> int:
    from .memory import measure, parse_size
    try:
        budget = parse_budget(args.budget)
        size = parse_size(args.size)
        plan = fit_budget(args.variant, budget, size, args.allow_resize, args.checkpoint)
    except (KeyError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    config, weights = write_fit(args.variant, plan, budget, args.out)
    print(f'chosen: {plan["size"][0]}x{plan["size"][1]} '
          f'{"dense" if plan["lowrank"] is None else plan["lowrank"]}; feature error {plan["error"]:.3g}; '
          f'predicted total {plan["predicted_total_bytes"] / 2 ** 20:.1f} MiB\nwrote {config}\nwrote {weights}')
    if args.no_measure:
        return 0
    record = measure(args.variant, plan['size'], 1, False, plan['lowrank'], checkpoint=weights)
    input_bytes = 3 * plan['size'][0] * plan['size'][1] * 4
    total = plan['weight_bytes'] + input_bytes + record['peak_bytes']
    ok = total <= budget
    print(f'measured: activations {record["peak_bytes"] / 2 ** 20:.1f} MiB ({record["memory_method"]}) + weights '
          f'{plan["weight_bytes"] / 2 ** 20:.1f} MiB + input {input_bytes / 2 ** 20:.1f} MiB = '
          f'{total / 2 ** 20:.1f} MiB '
          f'-> {"within" if ok else "OVER"} the budget of {budget / 2 ** 20:.1f} MiB')
    return 0 if ok else 1


def add_fit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('variant', help='zoo name')
    parser.add_argument('--budget', required=True, help='total peak memory, e.g. 256MB (K/M/G = 1024^n)')
    parser.add_argument('--size', default='512x512', help='input HxW')
    parser.add_argument('--allow-resize', action='store_true', help='also consider smaller input sizes')
    parser.add_argument('--checkpoint', help='weights to factorise (zoo name or path); default: random init')
    parser.add_argument('--out', default='work_dirs/fit', help='where the config and checkpoint go')
    parser.add_argument('--no-measure', action='store_true', help='skip the verifying measurement')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('variants', nargs='+', help='zoo names')
    parser.add_argument('--ratios', nargs='+', type=float, default=[1.0, 0.9, 0.7, 0.5, 0.3])
    parser.add_argument('--size', default='224x224', help='demo image and memory-model size, HxW')
    parser.add_argument('--checkpoint', help='weights to factorise (zoo name or path); default: random init')
    parser.add_argument('--skip-larger', action='store_true', help='keep layers whose factors would be larger')
    parser.add_argument('--json', help='write the rows here')


def cmd_table(args: argparse.Namespace) -> int:
    import json
    from .memory import parse_size
    size = parse_size(args.size)
    rows = []
    for variant in args.variants:
        rows += table_rows(variant, args.ratios, size, args.checkpoint, args.skip_larger)
        print(format_table([r for r in rows if r['variant'] == variant]), flush=True)
    if not args.checkpoint:
        print('(weights: the family\'s random initialisation; pass --checkpoint for pretrained weights, whose '
              'spectra decay faster)')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='backbones lowrank', description=__doc__.split('\n\n')[0])
    add_arguments(parser)
    return cmd_table(parser.parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
