"""What every backbone family shares: arch resolution, the class registry, feature_info, freezing,
norm_eval and pretrained initialisation. Pure PyTorch; OpenMMLab registration lives in `registry.py`.

A family module subclasses `DenseBackbone`, fills the class attributes below, decorates the class with
`@register_backbone`, and registers its checkpoint converter with `register_converter`.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import numbers
import re
from collections.abc import Iterable, Mapping
from typing import Any, Callable, ClassVar, Optional, Sequence

import torch
from torch import nn

BACKBONE_CLASSES: dict[str, type['DenseBackbone']] = {}
"""Class name → class, for every family class (what `registry.py` hands to mmengine)."""

CONVERTERS: dict[str, Callable[[dict], dict]] = {}
"""Family name → `convert(state_dict) -> state_dict` (layout auto-detected, no-op on ours)."""


def register_backbone(cls: type['DenseBackbone']) -> type['DenseBackbone']:
    """Class decorator: make a family class known to the factory, the zoo and the OpenMMLab registry."""
    name = cls.__name__
    if name in BACKBONE_CLASSES and BACKBONE_CLASSES[name] is not cls:
        raise KeyError(f'backbone class {name} is registered twice')
    if not cls.ARCHS:
        raise ValueError(f'{name}.ARCHS is empty')
    BACKBONE_CLASSES[name] = cls
    return cls


MECHANISMS: dict[str, tuple[int, Callable[['DenseBackbone', Any], None]]] = {}
"""Constructor keyword → (order, apply(model, cfg)): the family-agnostic mechanisms (`adapter=`,
`slimmable=`, `lean=`, ...). Every family constructor and `create_backbone` accept these keywords; the
mechanism is applied once the family's own `__init__` has built the modules, lowest order first."""


def register_mechanism(keyword: str, order: int) -> Callable[[Callable], Callable]:
    """Decorator: `@register_mechanism('adapter', order=50) def apply_adapter(model, cfg): ...`.

    `apply` runs after the most-derived family `__init__` returns, only when the keyword was given and is
    not None; it may raise (bad configuration) and then the construction fails."""
    def wrap(fn: Callable) -> Callable:
        if keyword in MECHANISMS and MECHANISMS[keyword][1] is not fn:
            raise KeyError(f'mechanism keyword {keyword!r} is registered twice')
        MECHANISMS[keyword] = (order, fn)
        return fn
    return wrap


def _with_mechanisms(init: Callable) -> Callable:
    """Wrap a family `__init__`: take the mechanism keywords out, build, then apply them (outermost only)."""
    @functools.wraps(init)
    def wrapped(self, *args, **kwargs):
        given = {k: kwargs.pop(k) for k in list(kwargs) if k in MECHANISMS}
        depth = self.__dict__.get('_init_depth', 0)     # nested family __init__s (PCPVT → _Twins...)
        self.__dict__['_init_depth'] = depth + 1
        try:
            init(self, *args, **kwargs)
        finally:
            if depth:
                self.__dict__['_init_depth'] = depth
            else:
                self.__dict__.pop('_init_depth', None)
        if depth == 0:
            # the constructor arguments without mechanism keywords (what an export rebuilds from)
            arguments = inspect.signature(init).bind(self, *args, **kwargs).arguments
            self._init_arguments = {k: v for k, v in list(arguments.items())[1:]}
            for keyword, (_, apply) in sorted(MECHANISMS.items(), key=lambda kv: kv[1][0]):
                if given.get(keyword) is not None:
                    apply(self, given[keyword])
        elif given:
            raise TypeError(f'{type(self).__name__}: mechanism keywords {sorted(given)} reached a nested '
                            '__init__; pass them to the outermost constructor')
    return wrapped


def register_converter(family: str) -> Callable[[Callable], Callable]:
    """Decorator: `@register_converter('focalnet') def convert_focalnet(sd): ...`."""
    def wrap(fn: Callable) -> Callable:
        CONVERTERS[family] = fn
        return fn
    return wrap


# ---- argument validation -------------------------------------------------------------------------
class InvalidArgumentError(ValueError, TypeError):
    """A public entry point was given a value it does not accept; the message names the argument, the
    value given and what is accepted. Both a ValueError and a TypeError, so either `except` catches it."""


def invalid_argument(owner: str, name: str, given: Any, accepted: str, detail: str = '',
                     fix: str = '') -> InvalidArgumentError:
    """The one message format, e.g. `FocalNet: drop_path_rate=2.0 is not accepted; accepted: a number in
    [0, 1)`, plus `. {fix}` when given. `given` is shown by repr (shortened), or as is when a `Given`."""
    shown = given.text if isinstance(given, Given) else _short_repr(given)
    return InvalidArgumentError(f'{owner}: {name}={shown} is not accepted{detail}; accepted: {accepted}'
                                + (f'. {fix}' if fix else ''))


@dataclasses.dataclass(frozen=True)
class Given:
    """A value already described for an error message (a tensor's shape and dtype, say)."""
    text: str


def _short_repr(value: Any, limit: int = 100) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + '...'


class Rule:
    """A declarative constraint on one argument or arch value (see `DenseBackbone.ARG_RULES`)."""

    def problem(self, value: Any) -> Optional[str]:
        """None when `value` is accepted, else a detail ('' or ' (entry 2 is 0)')."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def check(self, owner: str, name: str, value: Any) -> None:
        detail = self.problem(value)
        if detail is not None:
            raise invalid_argument(owner, name, value, self.describe(), detail)


@dataclasses.dataclass(frozen=True)
class Number(Rule):
    """A real number (an integer with `integer=True`, odd with `odd=True`) within optional bounds."""
    low: Optional[float] = None
    high: Optional[float] = None
    integer: bool = False
    odd: bool = False
    low_open: bool = False
    high_open: bool = False

    def problem(self, value: Any) -> Optional[str]:
        kind = numbers.Integral if self.integer or self.odd else numbers.Real
        if isinstance(value, bool) or not isinstance(value, kind) or value != value:  # NaN != NaN
            return ''
        if self.low is not None and (value < self.low or self.low_open and value == self.low):
            return ''
        if self.high is not None and (value > self.high or self.high_open and value == self.high):
            return ''
        return '' if self.odd and value % 2 == 0 else None

    def describe(self) -> str:
        kind = 'an odd integer' if self.odd else 'an integer' if self.integer else 'a number'
        if self.low is not None and self.high is not None:
            return (f'{kind} in {"(" if self.low_open else "["}{self.low:g}, '
                    f'{self.high:g}{")" if self.high_open else "]"}')
        if self.low is not None:
            return f'{kind} {">" if self.low_open else ">="} {self.low:g}'
        if self.high is not None:
            return f'{kind} {"<" if self.high_open else "<="} {self.high:g}'
        return kind


@dataclasses.dataclass(frozen=True)
class Each(Rule):
    """A non-empty list or tuple whose every entry satisfies `rule` (a per-stage / per-branch value);
    with `scalar_ok=True` a single value satisfying `rule` is accepted too."""
    rule: Rule
    scalar_ok: bool = False

    def problem(self, value: Any) -> Optional[str]:
        if self.scalar_ok and self.rule.problem(value) is None:
            return None
        if not isinstance(value, (list, tuple)) or not value:
            return ''
        for i, entry in enumerate(value):
            if self.rule.problem(entry) is not None:
                return f' (entry {i} is {_short_repr(entry, 40)})'
        return None

    def describe(self) -> str:
        one = self.rule.describe()
        listed = f'a non-empty list of entries each {one}'
        return f'{one}, or {listed}' if self.scalar_ok else listed


@dataclasses.dataclass(frozen=True)
class OneOf(Rule):
    """One of a fixed set of values (compared by type and value: 1 is not True)."""
    choices: tuple

    def problem(self, value: Any) -> Optional[str]:
        ok = any(type(value) is type(c) and value == c for c in self.choices)
        return None if ok else ''

    def describe(self) -> str:
        return 'one of ' + ', '.join(repr(c) for c in self.choices)


FLAG = OneOf((True, False))
PROBABILITY = Number(0, 1, high_open=True)
POSITIVE_INT = Number(1, integer=True)
POSITIVE = Number(0, low_open=True)

COMMON_ARG_RULES: dict[str, Rule] = dict(
    drop_path_rate=PROBABILITY, drop_rate=PROBABILITY, attn_drop_rate=PROBABILITY,
    norm_eval=FLAG, with_cp=FLAG, out_norm=FLAG,
    in_chans=POSITIVE_INT, in_channels=POSITIVE_INT, patch_size=POSITIVE_INT,
    embed_dim=POSITIVE_INT, embed_dims=Each(POSITIVE_INT, scalar_ok=True), depths=Each(POSITIVE_INT),
    num_heads=Each(POSITIVE_INT, scalar_ok=True), mlp_ratio=Each(POSITIVE, scalar_ok=True),
    mlp_ratios=Each(POSITIVE, scalar_ok=True), window_size=Each(POSITIVE_INT, scalar_ok=True),
)
"""Rules by argument name, for every family that has an argument or arch key of that name (the common
vocabulary of the official constructors); a family's `ARG_RULES` add to and override these."""

PRETRAINED_INIT = "None or dict(type='Pretrained', checkpoint=NAME_OR_PATH_OR_URL[, prefix=...])"


def check_out_indices(owner: str, out_indices: Any, num_stages: int) -> None:
    """A non-empty sequence of distinct stage indices in 0..num_stages-1."""
    accepted = f'a non-empty list of distinct stage indices in 0..{num_stages - 1}'
    if isinstance(out_indices, (str, bytes, Mapping)) or not isinstance(out_indices, Iterable):
        raise invalid_argument(owner, 'out_indices', out_indices, accepted)
    items = list(out_indices)
    index = Number(0, num_stages - 1, integer=True)
    bad = [i for i in items if index.problem(i) is not None]
    if not items or bad or len(set(items)) != len(items):
        detail = f' ({_short_repr(bad[0], 40)} is not a stage index)' if bad else (
            ' (empty)' if not items else ' (repeated index)')
        raise invalid_argument(owner, 'out_indices', out_indices, accepted, detail)


def check_frozen_stages(owner: str, frozen_stages: Any, num_stages: int) -> None:
    """-1 (nothing frozen) .. num_stages-1 (everything frozen)."""
    rule = Number(-1, num_stages - 1, integer=True)
    if rule.problem(frozen_stages) is not None:
        raise invalid_argument(owner, 'frozen_stages', frozen_stages,
                               f'{rule.describe()} (-1 freezes nothing, k freezes the stem and stages 0..k)')


def check_init_cfg(owner: str, init_cfg: Any) -> None:
    if init_cfg is None:
        return
    if not isinstance(init_cfg, Mapping) or init_cfg.get('type') != 'Pretrained' or not init_cfg.get('checkpoint'):
        raise invalid_argument(owner, 'init_cfg', init_cfg, PRETRAINED_INIT)


_MISSING = object()


def _lookup(mapping: Mapping, path: str) -> Any:
    """`mapping['a']['b']` for path 'a.b', or _MISSING."""
    value: Any = mapping
    for part in path.split('.'):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _arch_name(path: str) -> str:
    """'stage2.num_heads' → "arch['stage2']['num_heads']" (how a user spells it in messages)."""
    return 'arch' + ''.join(f'[{part!r}]' for part in path.split('.'))


def _with_validation(init: Callable) -> Callable:
    """Wrap a family `__init__`: every argument (and the resolved arch's values) is checked against the
    declared rules before anything is built (see `DenseBackbone.validate_args`)."""
    signature = inspect.signature(init)
    params = list(signature.parameters.values())[1:]   # without self
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params)

    @functools.wraps(init)
    def wrapped(self, *args, **kwargs):
        owner = type(self).__name__
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError:
            unknown = sorted(set(kwargs) - {p.name for p in params})
            if unknown and not accepts_any:
                raise InvalidArgumentError(
                    f'{owner}: unknown keyword argument{"s" if len(unknown) > 1 else ""} {unknown}; accepted: '
                    f'{sorted([p.name for p in params] + list(MECHANISMS))}') from None
            raise    # positional misuse: Python's own message says it
        bound.apply_defaults()
        arguments = dict(list(bound.arguments.items())[1:])
        defaults = {p.name: p.default for p in params}
        type(self).validate_args(arguments, defaults)
        init(self, *args, **kwargs)
    return wrapped


class DenseBackbone(nn.Module):
    """Base of every zoo backbone.

    Class attributes a family sets:
        FAMILY: converter key ('focalnet', 'twins', 'hrformer').
        ZOO_PREFIX: prefix of zoo names, e.g. 'focalnet' → 'focalnet-tiny-srf', 'twins-pcpvt'.
        DEFAULTS: the official constructor's defaults, by the official argument names.
        ARCHS: variant name → overrides of DEFAULTS (official argument names only).
        IGNORED_CHECKPOINT_KEYS: regexes of checkpoint keys (after conversion) that may be dropped
            when loading, e.g. classification heads (`r'^head\\.'`).
        OPTIONAL_MODEL_KEYS: regexes of our keys a checkpoint may lack (e.g. dense-only output norms,
            which the official dense loaders also leave at their initialisation).

    Subclass duties: build modules in `__init__` (after calling `super().__init__(...)`, passing
    `in_channels`), declare `ARG_RULES` for arguments the common rules do not cover, implement
    `forward(x) -> tuple[Tensor, ...]` starting with `self.check_input(x)`, `stage_modules(i)` (the
    modules making up stage i, used by `frozen_stages`; stage -1 / 0 may be the stem, as the family
    documents), `feature_info` (set `self._feature_info`), and `micro_arch(arch)` for tests. Every
    constructor argument is checked against the rules before the family's `__init__` runs.
    """

    FAMILY: ClassVar[str] = ''
    ZOO_PREFIX: ClassVar[str] = ''
    DEFAULTS: ClassVar[dict[str, Any]] = {}
    ARCHS: ClassVar[dict[str, dict[str, Any]]] = {}
    IGNORED_CHECKPOINT_KEYS: ClassVar[tuple[str, ...]] = ()
    OPTIONAL_MODEL_KEYS: ClassVar[tuple[str, ...]] = ()
    NUM_STAGES: ClassVar[int] = 4
    ARG_RULES: ClassVar[dict[str, Rule]] = {}
    """Family rules by constructor argument or arch key (a dotted path into a nested arch dict, e.g.
    'stage2.num_channels'), on top of `COMMON_ARG_RULES`; checked before anything is built."""
    DIVISIBLE: ClassVar[tuple[tuple[str, str], ...]] = ()
    """(widths, heads) arch key pairs: each width must be a multiple of its number of heads."""
    MIN_INPUT_SIZE: ClassVar[int] = 32

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if '__init__' in cls.__dict__:
            cls.__init__ = _with_mechanisms(_with_validation(cls.__dict__['__init__']))

    def __init__(self, *, out_indices: Sequence[int], frozen_stages: int = -1, norm_eval: bool = False,
                 with_cp: bool = False, init_cfg: Optional[dict] = None, in_channels: int = 3):
        super().__init__()
        self.in_channels = in_channels      # what `check_input` expects of forward's input
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.init_cfg = copy.deepcopy(init_cfg)
        self._feature_info: list[dict[str, int]] = []

    # ---- arch table -------------------------------------------------------------------------------
    @classmethod
    def resolve_arch(cls, arch: str | dict) -> dict[str, Any]:
        """Variant name or dict of official kwargs → complete official kwargs (defaults filled in).

        Unknown variant names and unknown keys raise, naming the valid choices.
        """
        if isinstance(arch, str):
            if arch not in cls.ARCHS:
                raise KeyError(f'{cls.__name__}: unknown arch {arch!r}; choose one of '
                               f'{sorted(cls.ARCHS)} or pass a dict of official arguments')
            overrides = cls.ARCHS[arch]
        elif isinstance(arch, dict):
            overrides = arch
        else:
            raise TypeError(f'{cls.__name__}: arch must be a name or a dict, got {type(arch).__name__}')
        unknown = sorted(set(overrides) - set(cls.DEFAULTS))
        if unknown:
            raise KeyError(f'{cls.__name__}: unknown arch keys {unknown}; valid keys (official '
                           f'argument names): {sorted(cls.DEFAULTS)}')
        resolved = copy.deepcopy(cls.DEFAULTS)
        resolved.update(copy.deepcopy(overrides))
        return resolved

    # ---- argument and input validation ------------------------------------------------------------
    @classmethod
    def num_stages_of(cls, cfg: Mapping[str, Any]) -> int:
        """Number of stages of a resolved arch (what `out_indices` and `frozen_stages` index)."""
        depths = cfg.get('depths')
        return len(depths) if isinstance(depths, (list, tuple)) else cls.NUM_STAGES

    @classmethod
    def validate_args(cls, arguments: Mapping[str, Any], defaults: Mapping[str, Any] = {}) -> dict[str, Any]:
        """Check constructor `arguments` (and the values of the arch they name) against `COMMON_ARG_RULES`,
        `ARG_RULES`, the stage range of `out_indices` / `frozen_stages`, `init_cfg` and `DIVISIBLE`; raise
        one `InvalidArgumentError` for the first offence. None passes where the default is None.
        Returns the resolved arch (empty without an `arch` argument)."""
        owner = cls.__name__
        cfg = cls.resolve_arch(arguments['arch']) if 'arch' in arguments else {}
        rules = {**COMMON_ARG_RULES, **cls.ARG_RULES}
        for source, source_defaults, in_arch in ((arguments, defaults, False), (cfg, cls.DEFAULTS, True)):
            for path, rule in rules.items():
                value = _lookup(source, path)
                if value is _MISSING or value is None and _lookup(source_defaults, path) is None:
                    continue
                rule.check(owner, _arch_name(path) if in_arch else path, value)
        num_stages = cls.num_stages_of(cfg)
        if arguments.get('out_indices') is not None:
            check_out_indices(owner, arguments['out_indices'], num_stages)
        if 'frozen_stages' in arguments:
            check_frozen_stages(owner, arguments['frozen_stages'], num_stages)
        check_init_cfg(owner, arguments.get('init_cfg'))
        for widths_key, heads_key in cls.DIVISIBLE:
            widths, heads = _lookup(cfg, widths_key), _lookup(cfg, heads_key)
            pairs = list(zip(widths, heads)) if isinstance(widths, (list, tuple)) else [(widths, heads)]
            if any(w % h for w, h in pairs):
                raise invalid_argument(owner, _arch_name(heads_key), heads,
                                       f'head counts that divide the widths {_arch_name(widths_key)}={widths}')
        return cfg

    def check_input(self, x: torch.Tensor) -> None:
        """Raise `InvalidArgumentError` unless `x` is an N×C×H×W floating tensor (C = `in_channels`,
        H, W >= `MIN_INPUT_SIZE`) on the weights' device, in their dtype or under autocast. Every family's
        `forward` calls it first: a few attribute reads (messages are built only on failure), no graph
        break under torch.compile; under torch.jit.trace (TorchScript ONNX export) the size checks are
        skipped, nothing is recorded."""
        if not isinstance(x, torch.Tensor):
            raise self._input_error(f'a {type(x).__name__}', 'a torch.Tensor {layout}')
        if x.dim() != 4:
            raise self._input_error(f'a {x.dim()}-D tensor of shape {tuple(x.shape)}', 'a 4-D tensor {layout}',
                                    'Add the batch dimension with x.unsqueeze(0)' if x.dim() == 3 else '')
        if not x.is_floating_point():
            raise self._input_error(f'a {x.dtype} tensor', 'a floating-point tensor',
                                    'Cast with x.float() and normalise it (subtract the mean, divide by the std '
                                    'of the pretrained weights)')
        if not torch.jit.is_tracing():  # traced sizes are tensors: comparing them would warn and freeze them
            if x.shape[1] != self.in_channels:
                raise self._input_error(f'a tensor of shape {tuple(x.shape)}',
                                        'a tensor {layout} ({channels} channels)',
                                        'For a grey image repeat the channel: x.expand(-1, 3, -1, -1)'
                                        if x.shape[1] == 1 and self.in_channels == 3 else '')
            if x.shape[2] < self.MIN_INPUT_SIZE or x.shape[3] < self.MIN_INPUT_SIZE:
                raise self._input_error(f'a tensor of shape {tuple(x.shape)}',
                                        f'height and width >= {self.MIN_INPUT_SIZE}', 'Resize or pad the image')
        weight = next(self.parameters(), None)
        if weight is None:
            return
        if x.device != weight.device:
            raise self._input_error(f'a tensor on {x.device}', f"a tensor on the weights' device {weight.device}",
                                    f"Move it with x.to('{weight.device}') or the model with model.to(x.device)")
        if x.dtype != weight.dtype and not _autocast_enabled(x.device.type):
            raise self._input_error(f'a {x.dtype} tensor',
                                    f"the weights' dtype {weight.dtype}, or any floating dtype under torch.autocast",
                                    f'Cast with x.to({weight.dtype}), convert the model with model.to({x.dtype}), '
                                    f"or run under torch.autocast('{x.device.type}', dtype=torch.bfloat16)")

    def _input_error(self, given: str, accepted: str, fix: str = '') -> InvalidArgumentError:
        accepted = accepted.format(layout=f'N×{self.in_channels}×H×W', channels=self.in_channels)
        return invalid_argument(f'{type(self).__name__}.forward', 'x', Given(given), accepted, fix=fix)

    @classmethod
    def micro_arch(cls, arch: str) -> dict[str, Any]:
        """A tiny dict arch with the same code paths as `arch` (tests run these; full size on meta)."""
        raise NotImplementedError

    @classmethod
    def zoo_names(cls) -> list[str]:
        return [f'{cls.ZOO_PREFIX}-{a}' for a in cls.ARCHS]

    # ---- outputs ----------------------------------------------------------------------------------
    @property
    def feature_info(self) -> list[dict[str, int]]:
        """One dict per output: `channels`, `stride` (input pixels per output pixel), `index`."""
        return [dict(d) for d in self._feature_info]

    @property
    def out_channels(self) -> list[int]:
        return [d['channels'] for d in self._feature_info]

    @property
    def out_strides(self) -> list[int]:
        return [d['stride'] for d in self._feature_info]

    # ---- freezing and train mode ------------------------------------------------------------------
    def stage_modules(self, stage: int) -> list[nn.Module]:
        raise NotImplementedError

    def _pyramid_stage_modules(self, stage: int, *extra: str) -> list[nn.Module]:
        """`stage_modules` of the Swin-like layout shared by FocalNet and S3: -1 → `patch_embed`; i → the
        blocks of `layers[i]`, the `downsample` at the end of `layers[i - 1]` (i > 0), and the attributes
        named by `extra` formatted with i (e.g. 'norm{}') that exist."""
        if stage == -1:
            return [self.patch_embed]
        if not 0 <= stage < len(self.layers):
            return []
        modules: list[nn.Module] = [self.layers[stage].blocks]
        if stage > 0:
            modules.append(self.layers[stage - 1].downsample)
        modules += [getattr(self, name.format(stage)) for name in extra if hasattr(self, name.format(stage))]
        return modules

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:  # -1 (default): nothing frozen, as in OpenMMLab
            return
        for stage in range(-1, self.frozen_stages + 1):
            for module in self.stage_modules(stage):
                module.eval()
                for p in module.parameters():
                    p.requires_grad_(False)

    def train(self, mode: bool = True) -> 'DenseBackbone':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    # ---- weights ----------------------------------------------------------------------------------
    def reset_parameters_official(self) -> None:
        """The official random initialisation (families override)."""

    def init_weights(self) -> None:
        """OpenMMLab entry point: `init_cfg=dict(type='Pretrained', checkpoint=..., prefix=...)` loads
        through `backbones.load_pretrained` (conversion, adaptation, strict report); otherwise the
        official random initialisation."""
        cfg = self.init_cfg
        if cfg and cfg.get('type') == 'Pretrained':
            from .weights import load_pretrained
            load_pretrained(self, cfg['checkpoint'], prefix=cfg.get('prefix'))
        elif cfg:
            raise ValueError(f"{type(self).__name__}: unsupported init_cfg type {cfg.get('type')!r}; "
                             "use dict(type='Pretrained', checkpoint=NAME_OR_PATH_OR_URL) or None")
        else:
            self.reset_parameters_official()

    def adapt_state_dict(self, state_dict: dict[str, torch.Tensor]) -> tuple[dict, list[str]]:
        """Shape adaptation where the official dense loaders did it; returns (state_dict, adapted keys)."""
        return state_dict, []

    def is_ignorable_checkpoint_key(self, key: str) -> bool:
        return any(re.search(p, key) for p in self.IGNORED_CHECKPOINT_KEYS)

    def is_optional_model_key(self, key: str) -> bool:
        return any(re.search(p, key) for p in self.OPTIONAL_MODEL_KEYS)


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:   # torch < 2.4
        return torch.is_autocast_cpu_enabled() if device_type == 'cpu' else torch.is_autocast_enabled()


def count_parameters(module: nn.Module, exclude: Iterable[str] = ()) -> int:
    """Number of parameter elements, skipping parameters whose name starts with any `exclude` prefix."""
    exclude = tuple(exclude)
    return sum(p.numel() for n, p in module.named_parameters() if not n.startswith(exclude))
