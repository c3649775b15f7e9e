"""ARC adapters for every family: parameter-efficient fine-tuning of a frozen backbone, tiny adapter
files, exact merge for deployment.

ARC ("Efficient Adaptation of Large Vision Transformer via Adapter Re-Composing", Dong et al.,
NeurIPS 2023, arXiv 2310.06234). On a token x (width C, bottleneck r):

    ARC(x) = x + dropout(x · W · diag(s)) · Wᵀ + b          (no non-linearity)

W (C × r) is shared by the adapters of one place ('mixer' or 'mlp') in one group of blocks of equal
width (per stage; per branch in HRFormer: `_taps.tap_groups`); every block owns s (r) and b (C).
Init as the paper: W xavier-uniform, b = 0, s = 0 in front of the token mixer (an identity at start),
s xavier-uniform in front of the MLP. The adapters sit in the blocks' taps (`_taps.py`), i.e. on the
normalised input of the token mixer and of the MLP, residual path untouched. In eval mode an adapter
is x·M + b with M = I + W diag(s) Wᵀ (symmetric), so it folds exactly into the layers that consume
the tap: a Linear (W_lin' = W_lin·M, c' = W_lin·b + c) or an unpadded convolution (M folded into
every kernel tap, W·b summed over the kernel into the bias). Where a consumer has no bias (e.g.
`qkv_bias=False`) the adapter has no b, so the merge stays exact and adds no key.

Deviations from the official code: the official Swin port puts its MLP adapter on the residual
stream before norm2 (not mergeable); here, as in the official ViT, it sits after the norm. In
FocalNet's post-LN variants (`use_postln`) there is no pre-norm input: the taps sit on the
modulation's / MLP's input (the un-normalised stream) and fold into the same consumers.

Training memory: the frozen backbone stores nothing for weight gradients, and with `recompute=True` (the
default) each block's MLP branch (norm, adapter, fc1, activation) and each mixer-side adapter are
recomputed in backward instead of stored (`_taps.Tap`): per block only the branch input is kept, not the
4·C-wide hidden activation; it costs one fc1 per block in backward. `recompute='all'` recomputes the token
mixer's branch as well (its attention scores: HRFormer's memory is mostly those) at the cost of its forward
again; `recompute=False` stores everything as usual.

`adapter=dict(type='LoRA', bottleneck=r)` puts a rank-r LoRA on the same consumers instead (the
baseline of tools/transfer_experiment.py; merged the same way).

Use: `FocalNet('tiny-srf', adapter=dict(type='ARC', bottleneck=50))` (any family constructor, config or
`create_backbone`), then `merge_adapters`, `adapter_state_dict`, `save_adapters`, `load_adapters`.
"""
from __future__ import annotations

import copy
import hashlib
import os
import re
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ._base import InvalidArgumentError, invalid_argument, register_mechanism
from ._taps import TAP_NAMES, tap_consumer_modules, tap_groups, tap_width, tapped_blocks

__all__ = ['ARCAdapter', 'LoRADelta', 'AdapterError', 'merge_adapters', 'adapter_state_dict',
           'save_adapters', 'load_adapters', 'has_adapters']

ADAPTER_TYPES = ('ARC', 'LoRA')
PLACES = {'mixer': 'mixer_tap', 'mlp': 'mlp_tap'}
DEFAULT_CFG: dict[str, Any] = dict(type='ARC', bottleneck=50, dropout=0.1, places=('mixer', 'mlp'),
                                   recompute=True)
SHARED_ATTR = 'adapter_shared'
STATE_ATTR = '_adapter_state'
MERGED_ATTR = '_adapters_merged'
LORA_ATTR = 'lora'
ADAPTER_KEY_PATTERNS = (rf'^{SHARED_ATTR}\.', r'(^|\.)({})\.inner\.'.format('|'.join(TAP_NAMES)),
                        rf'\.{LORA_ATTR}\.lora_[ab]$')
# `recompute=` → (mixer_tap, mlp_tap) recomputation levels (`_taps.Tap`)
RECOMPUTE_LEVELS = {True: ('module', 'branch'), 'all': ('branch', 'branch'), False: (False, False)}
FILE_FORMAT = 'backbones-adapters'
FILE_VERSION = 1
assert set(PLACES.values()) == set(TAP_NAMES)


class AdapterError(InvalidArgumentError):
    """An adapter request that cannot be honoured: bad config, nothing to merge, wrong base, bad file."""


def _bad(name: str, given: Any, accepted: str, detail: str = '') -> AdapterError:
    """`adapter: {name}={given} is not accepted{detail}; accepted: {accepted}` (the package's format)."""
    return AdapterError(str(invalid_argument('adapter', name, given, accepted, detail)))


# ---------------------------------------------------------------------------------------------------
# modules
# ---------------------------------------------------------------------------------------------------
class SharedBasis(nn.Module):
    """W (C, r), shared by the adapters of one place in one group of blocks; xavier-uniform init."""

    def __init__(self, width: int, bottleneck: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(width, bottleneck))
        nn.init.xavier_uniform_(self.weight)


class ARCAdapter(nn.Module):
    """(..., C) → (..., C): x + dropout(x W diag(s)) Wᵀ + b, W from the group's `SharedBasis`.

    The basis is referenced, not registered: its one state-dict key lives in the backbone's
    `adapter_shared`; the block's tap holds `scale` (s) and `bias` (b) only.
    """

    def __init__(self, basis: SharedBasis, dropout: float, scale_init: str, with_bias: bool):
        super().__init__()
        width, bottleneck = basis.weight.shape
        object.__setattr__(self, 'basis', basis)
        self.scale = nn.Parameter(torch.zeros(bottleneck))
        if scale_init == 'xavier':
            nn.init.xavier_uniform_(self.scale.data.view(1, bottleneck))
        elif scale_init != 'zeros':
            raise ValueError(f'scale_init must be "zeros" or "xavier", got {scale_init!r}')
        self.bias = nn.Parameter(torch.zeros(width)) if with_bias else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.basis.weight
        out = x + self.dropout((x @ w) * self.scale) @ w.t()
        return out if self.bias is None else out + self.bias

    @torch.no_grad()
    def recomposed(self) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(M = I + W diag(s) Wᵀ (C, C), b (C) or None) in float64: the eval-mode adapter is x·M + b."""
        w = self.basis.weight.double()
        m = torch.eye(w.shape[0], dtype=torch.float64, device=w.device) + (w * self.scale.double()) @ w.t()
        return m, None if self.bias is None else self.bias.double()

    def extra_repr(self) -> str:
        width, bottleneck = self.basis.weight.shape
        return f'width={width}, bottleneck={bottleneck}, bias={self.bias is not None}'


class LoRADelta(nn.Module):
    """LoRA (Hu et al., arXiv 2106.09685) on one tap consumer, the baseline ARC is compared with:
    consumer(x) + dropout(x) ΔWᵀ with ΔW = B·A (A: r × fan_in kaiming-uniform, B: out × r zeros, scaling 1).

    Lives at `<consumer>.lora` and acts through a forward hook on the consumer (a Linear, or an unpadded
    convolution: ΔW reshaped to its kernel); merging adds ΔW to the consumer's weight.
    """

    def __init__(self, consumer: nn.Module, rank: int, dropout: float):
        super().__init__()
        weight = consumer.weight
        self.lora_a = nn.Parameter(torch.empty(rank, weight[0].numel()))
        nn.init.kaiming_uniform_(self.lora_a, a=5 ** 0.5)
        self.lora_b = nn.Parameter(torch.zeros(weight.shape[0], rank))
        self.dropout = nn.Dropout(dropout)

    def delta(self, consumer: nn.Module) -> torch.Tensor:
        return (self.lora_b @ self.lora_a).view_as(consumer.weight)

    def hook(self, consumer: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        x = self.dropout(inputs[0])
        if isinstance(consumer, nn.Linear):
            return output + (x @ self.lora_a.t()) @ self.lora_b.t()
        return output + F.conv2d(x, self.delta(consumer), None, consumer.stride, consumer.padding,
                                 consumer.dilation, consumer.groups)


# ---------------------------------------------------------------------------------------------------
# configuration and installation (the `adapter=` mechanism)
# ---------------------------------------------------------------------------------------------------
def resolve_adapter_cfg(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """`adapter=` dict → complete config; every bad value raises naming the key, value and choices."""
    if not isinstance(cfg, Mapping):
        raise _bad('adapter', cfg, f'a dict like {DEFAULT_CFG}')
    unknown = sorted(set(cfg) - set(DEFAULT_CFG))
    if unknown:
        raise _bad('keys', unknown, f'{sorted(DEFAULT_CFG)}', ' (unknown keys)')
    out = dict(DEFAULT_CFG, **cfg)
    if out['type'] not in ADAPTER_TYPES:
        raise _bad('type', out['type'], f'{list(ADAPTER_TYPES)}')
    r = out['bottleneck']
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise _bad('bottleneck', r, 'a positive int (the paper uses 50 for ViT-B)')
    p = out['dropout']
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise _bad('dropout', p, 'a number in [0, 1) (the paper uses 0.1)')
    places = out['places']
    places = (places,) if isinstance(places, str) else tuple(places)
    bad = [q for q in places if q not in PLACES]
    if bad or not places or len(set(places)) != len(places):
        raise _bad('places', places, f'distinct entries of {sorted(PLACES)}', f' (unknown: {bad})' if bad else '')
    if not (isinstance(out['recompute'], bool) or out['recompute'] == 'all'):
        raise _bad('recompute', out['recompute'], "True (the MLP branches), 'all' (every branch) or False")
    out['places'] = places
    out['dropout'] = float(p)
    return out


def _check_foldable(consumer: nn.Module, where: str) -> None:
    """The merge is exact only for a Linear or an unpadded, ungrouped, undilated convolution."""
    if isinstance(consumer, nn.Linear):
        return
    if (isinstance(consumer, nn.Conv2d) and consumer.groups == 1 and tuple(consumer.dilation) == (1, 1)
            and consumer.padding in ((0, 0), 'valid')):
        return
    raise AdapterError(f'adapter: tap consumer {where} ({consumer!r}) cannot absorb an adapter exactly; '
                       'only nn.Linear and unpadded, ungrouped nn.Conv2d consumers are supported')


@register_mechanism('adapter', order=50)
def apply_adapter(model: nn.Module, cfg: Mapping[str, Any]) -> None:
    """Install adapters in every tapped block of `model` and freeze the backbone's own weights:
    type 'ARC' in the taps; type 'LoRA' (the baseline, rank = `bottleneck`) on the taps' consumers.

    Validates everything before changing anything. Afterwards: the backbone's parameters do not
    require gradients (stages under `frozen_stages` keep their adapters frozen too), BatchNorm stays
    in eval (`norm_eval=True`), and adapter keys are optional for `load_pretrained`.
    """
    cfg = resolve_adapter_cfg(cfg)
    if has_adapters(model):
        raise AdapterError(f'{type(model).__name__} already has adapters; merge them or build a new model')
    blocks = dict(tapped_blocks(model))
    if not blocks:
        raise AdapterError(f'{type(model).__name__} has no tapped blocks: the adapter mechanism needs '
                           'blocks with mixer_tap / mlp_tap (see backbones/_taps.py)')
    groups = tap_groups(model)
    widths = {group: tap_width(blocks[names[0]], TAP_NAMES[0]) for group, names in groups.items()}
    too_narrow = {g: w for g, w in widths.items() if w < cfg['bottleneck']}
    if too_narrow:
        raise _bad('bottleneck', cfg['bottleneck'], f'an int <= {min(widths.values())}, the narrowest width',
                   f' for {type(model).__name__}: larger than the width of {sorted(too_narrow.items())}')
    for name, block in blocks.items():
        for place in cfg['places']:
            for path, consumer in tap_consumer_modules(block, PLACES[place]):
                _check_foldable(consumer, f'{name}.{path}')

    trainable_before = [n for n, p in model.named_parameters() if p.requires_grad]
    for p in model.parameters():
        p.requires_grad_(False)
    if cfg['type'] == 'ARC':
        model.add_module(SHARED_ATTR, _install_arc(blocks, groups, widths, cfg))
    else:
        _install_lora(blocks, cfg)
    for block in blocks.values():
        for tap_name, level in zip(TAP_NAMES, RECOMPUTE_LEVELS[cfg['recompute']]):
            getattr(block, tap_name).recompute = level
    model.__dict__[STATE_ATTR] = dict(cfg=cfg, trainable_before=trainable_before,
                                      norm_eval=getattr(model, 'norm_eval', False))
    model.norm_eval = True
    model.OPTIONAL_MODEL_KEYS = tuple(type(model).OPTIONAL_MODEL_KEYS) + ADAPTER_KEY_PATTERNS
    model.train(model.training)            # frozen_stages (adapters of frozen stages too), BN eval
    if cfg['type'] == 'ARC':               # a basis whose every user is frozen is frozen as well
        for group, names in groups.items():
            for place in cfg['places']:
                users = [getattr(blocks[n], PLACES[place]).inner for n in names]
                if not any(u.scale.requires_grad for u in users):
                    getattr(model, SHARED_ATTR)[group][place].weight.requires_grad_(False)


def _install_arc(blocks: dict[str, nn.Module], groups: dict[str, list[str]], widths: dict[str, int],
                 cfg: dict) -> nn.ModuleDict:
    """ARC adapters into the taps; returns the shared bases (group → place → `SharedBasis`)."""
    shared = nn.ModuleDict()
    for group, names in groups.items():
        bases = nn.ModuleDict({place: SharedBasis(widths[group], cfg['bottleneck']) for place in cfg['places']})
        shared[group] = bases
        for name in names:
            block = blocks[name]
            for place in cfg['places']:
                tap = PLACES[place]
                with_bias = all(getattr(c, 'bias', None) is not None for _, c in tap_consumer_modules(block, tap))
                getattr(block, tap).install(ARCAdapter(bases[place], cfg['dropout'],
                                                       'zeros' if place == 'mixer' else 'xavier', with_bias))
    return shared


def _install_lora(blocks: dict[str, nn.Module], cfg: dict) -> None:
    """A `LoRADelta` (rank = bottleneck) on every consumer of the chosen places' taps."""
    for block in blocks.values():
        for place in cfg['places']:
            for _, consumer in tap_consumer_modules(block, PLACES[place]):
                lora = LoRADelta(consumer, cfg['bottleneck'], cfg['dropout'])
                consumer.add_module(LORA_ATTR, lora)
                consumer.register_forward_hook(lora.hook)


def has_adapters(model: nn.Module) -> bool:
    """Whether `model` (a backbone or any module holding one) carries installed adapters."""
    return bool(adapted_backbones(model))


def adapted_backbones(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, backbone) of every adapted backbone in `model` ('' for `model` itself)."""
    return [(name, m) for name, m in model.named_modules() if STATE_ATTR in m.__dict__]


def is_adapter_key(key: str) -> bool:
    """Whether a backbone state-dict key belongs to an adapter (shared basis, s or b)."""
    return any(re.search(p, key) for p in ADAPTER_KEY_PATTERNS)


# ---------------------------------------------------------------------------------------------------
# merge for deployment
# ---------------------------------------------------------------------------------------------------
@torch.no_grad()
def _fold(consumer: nn.Module, m: torch.Tensor, b: Optional[torch.Tensor]) -> None:
    """consumer(x·M + b) == consumer'(x): fold M into the input side of the weight, W·b into the bias."""
    w = consumer.weight.double()
    if isinstance(consumer, nn.Linear):                  # (out, in)
        new_w, shift = w @ m, None if b is None else w @ b
    else:                                                # (out, in, kh, kw), no padding
        new_w = torch.einsum('oihw,ij->ojhw', w, m)
        shift = None if b is None else w.sum((2, 3)) @ b
    consumer.weight.copy_(new_w.to(consumer.weight.dtype))
    if shift is not None:
        consumer.bias.copy_((consumer.bias.double() + shift).to(consumer.bias.dtype))


@torch.no_grad()
def _fold_lora(consumer: nn.Module) -> None:
    """W += ΔW, then the LoRA module and its hook go."""
    lora = getattr(consumer, LORA_ATTR)
    new_w = consumer.weight.double() + lora.delta(consumer).double()
    consumer.weight.copy_(new_w.to(consumer.weight.dtype))
    for key, fn in list(consumer._forward_hooks.items()):
        if getattr(fn, '__self__', None) is lora:
            del consumer._forward_hooks[key]
    delattr(consumer, LORA_ATTR)


def _merge_backbone(backbone: nn.Module) -> None:
    state = backbone.__dict__[STATE_ATTR]
    for _, block in tapped_blocks(backbone):
        for tap_name in TAP_NAMES:
            tap = getattr(block, tap_name)
            consumers = [c for _, c in tap_consumer_modules(block, tap_name)]
            if tap.inner is not None:
                m, b = tap.inner.recomposed()
                for consumer in consumers:
                    _fold(consumer, m, b)
                tap.install(None)
            tap.recompute = False
            for consumer in consumers:
                if hasattr(consumer, LORA_ATTR):
                    _fold_lora(consumer)
    if hasattr(backbone, SHARED_ATTR):
        delattr(backbone, SHARED_ATTR)
    del backbone.__dict__[STATE_ATTR]
    backbone.__dict__.pop('OPTIONAL_MODEL_KEYS', None)
    backbone.norm_eval = state['norm_eval']
    trainable = set(state['trainable_before'])
    for name, p in backbone.named_parameters():
        p.requires_grad_(name in trainable)
    backbone.__dict__[MERGED_ATTR] = True
    backbone.train(backbone.training)


def merge_adapters(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Fold every adapter into its consumers → a plain model (state dict = the plain model's keys,
    outputs = the adapted model's in eval mode, no extra cost). `model` is a backbone or any module
    holding adapted backbones (detector, segmentor, pose model). A copy unless `inplace`.

    Raises `AdapterError` (changing nothing) when there is nothing to merge.
    """
    if not has_adapters(model):
        merged = any(MERGED_ATTR in m.__dict__ for m in model.modules())
        raise AdapterError(f'merge_adapters: {type(model).__name__} has no adapters to merge '
                           f'({"its adapters were already merged" if merged else "it was built without adapter="})')
    out = model if inplace else copy.deepcopy(model)
    for _, backbone in adapted_backbones(out):
        _merge_backbone(backbone)
    return out


# ---------------------------------------------------------------------------------------------------
# adapter files
# ---------------------------------------------------------------------------------------------------
def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """What was trained: the adapters of every adapted backbone in `model`, and everything outside
    those backbones (neck, head) when `model` is a full detector / segmentor / pose model."""
    found = adapted_backbones(model)
    if not found:
        raise AdapterError(f'adapter_state_dict: {type(model).__name__} has no adapters')
    prefixes = [f'{name}.' if name else '' for name, _ in found]
    out = {}
    for key, value in model.state_dict().items():
        owner = next((p for p in prefixes if key.startswith(p)), None)
        if owner is None or is_adapter_key(key[len(owner):]):
            out[key] = value
    return out


def base_fingerprint(backbone: nn.Module) -> str:
    """sha256 over the backbone's own (non-adapter) tensors: names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for key, value in sorted(backbone.state_dict().items()):
        if is_adapter_key(key):
            continue
        t = value.detach().cpu().contiguous()
        digest.update(f'{key}|{t.dtype}|{tuple(t.shape)}|'.encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def base_name(backbone: nn.Module) -> Optional[str]:
    """The base checkpoint the backbone was initialised from (its `init_cfg`), if it says."""
    init_cfg = getattr(backbone, 'init_cfg', None) or {}
    return str(init_cfg['checkpoint']) if init_cfg.get('type') == 'Pretrained' else None


def _file_sha256(source: Optional[str]) -> Optional[str]:
    """sha256 of the base checkpoint file when it is a local file or a cached zoo checkpoint."""
    if not source:
        return None
    from . import hub, zoo
    path = source if os.path.isfile(source) else None
    if path is None and source in zoo.all_checkpoints():
        cached = [p for _, p in hub.cached_status(zoo.get_checkpoint(source)) if p is not None]
        path = cached[0] if cached else None
    return hub.sha256_of(path) if path else None


def save_adapters(model: nn.Module, path: str | os.PathLike, base: Optional[str] = None) -> dict:
    """Write `adapter_state_dict(model)` with what it needs to be checked on load: the adapter config,
    and per adapted backbone its class, base checkpoint name (`base`, else its init_cfg), that file's
    sha256 (when it is local) and the fingerprint of the frozen base weights. Returns the payload."""
    found = adapted_backbones(model)
    if not found:
        raise AdapterError(f'save_adapters: {type(model).__name__} has no adapters')
    bases = {}
    for name, backbone in found:
        source = base or base_name(backbone)
        bases[name] = dict(cls=type(backbone).__name__, base=source, base_sha256=_file_sha256(source),
                           weights_sha256=base_fingerprint(backbone),
                           adapter={k: list(v) if isinstance(v, tuple) else v
                                    for k, v in backbone.__dict__[STATE_ATTR]['cfg'].items()})
    payload = dict(format=FILE_FORMAT, version=FILE_VERSION, backbones=bases,
                   state_dict={k: v.detach().cpu().clone() for k, v in adapter_state_dict(model).items()})
    os.makedirs(os.path.dirname(os.path.abspath(os.fspath(path))), exist_ok=True)
    torch.save(payload, os.fspath(path))
    return payload


def read_adapter_file(source: str | os.PathLike | Mapping) -> dict:
    """An adapter file (or its loaded payload), checked for format; tensors only (weights_only)."""
    payload = source if isinstance(source, Mapping) else torch.load(os.fspath(source), map_location='cpu',
                                                                     weights_only=True)
    if not isinstance(payload, Mapping) or payload.get('format') != FILE_FORMAT:
        raise AdapterError(f'{source if not isinstance(source, Mapping) else "payload"} is not an adapter file '
                           f'(format {FILE_FORMAT!r}); write one with backbones.save_adapters')
    return dict(payload)


def load_adapters(model: nn.Module, source: str | os.PathLike | Mapping) -> dict:
    """Load an adapter file into an adapted `model` built from the same config. Refused, with nothing
    changed, when the base weights differ from the file's (naming both), the adapter config differs,
    or keys / shapes do not match. Returns the payload."""
    payload = read_adapter_file(source)
    found = dict(adapted_backbones(model))
    for name, meta in payload['backbones'].items():
        if name not in found:
            raise AdapterError(f'adapter file expects an adapted backbone at {name or "<model>"!r}; '
                               f'this model has adapted backbones at {sorted(found) or "none"}')
        backbone = found[name]
        own_cfg = {k: list(v) if isinstance(v, tuple) else v
                   for k, v in backbone.__dict__[STATE_ATTR]['cfg'].items()}
        if own_cfg != meta['adapter']:
            raise AdapterError(f"adapter file config {meta['adapter']} differs from the model's {own_cfg}")
        fingerprint = base_fingerprint(backbone)
        if fingerprint != meta['weights_sha256']:
            raise AdapterError(
                f"adapter file was trained on base {meta['base']!r} (file sha256 {meta['base_sha256']}, "
                f"weights {meta['weights_sha256'][:16]}) but this {type(backbone).__name__} holds base "
                f'{base_name(backbone)!r} (weights {fingerprint[:16]}); refusing to load onto a different base')
    state = payload['state_dict']
    expected = adapter_state_dict(model)
    unexpected = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state))
    mismatched = [f'{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}'
                  for k in expected if k in state and state[k].shape != expected[k].shape]
    if unexpected or missing or mismatched:
        raise AdapterError(f'adapter file does not fit this model: unexpected {unexpected[:10]}, '
                           f'missing {missing[:10]}, shape mismatches {mismatched[:10]}')
    model.load_state_dict(state, strict=False)
    return payload
