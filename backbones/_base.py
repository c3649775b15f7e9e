"""What every backbone family shares: arch resolution, the class registry, feature_info, freezing,
norm_eval and pretrained initialisation. Pure PyTorch; OpenMMLab registration lives in `registry.py`.

A family module subclasses `DenseBackbone`, fills the class attributes below, decorates the class with
`@register_backbone`, and registers its checkpoint converter with `register_converter`.
"""
from __future__ import annotations

import copy
import re
from typing import Any, Callable, ClassVar, Iterable, Optional, Sequence

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


def register_converter(family: str) -> Callable[[Callable], Callable]:
    """Decorator: `@register_converter('focalnet') def convert_focalnet(sd): ...`."""
    def wrap(fn: Callable) -> Callable:
        CONVERTERS[family] = fn
        return fn
    return wrap


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

    Subclass duties: build modules in `__init__` (after calling `super().__init__(...)`), implement
    `forward(x) -> tuple[Tensor, ...]`, `stage_modules(i)` (the modules making up stage i, used by
    `frozen_stages`; stage -1 / 0 may be the stem, as the family documents), `feature_info`
    (set `self._feature_info`), and `micro_arch(arch)` for tests.
    """

    FAMILY: ClassVar[str] = ''
    ZOO_PREFIX: ClassVar[str] = ''
    DEFAULTS: ClassVar[dict[str, Any]] = {}
    ARCHS: ClassVar[dict[str, dict[str, Any]]] = {}
    IGNORED_CHECKPOINT_KEYS: ClassVar[tuple[str, ...]] = ()
    OPTIONAL_MODEL_KEYS: ClassVar[tuple[str, ...]] = ()
    NUM_STAGES: ClassVar[int] = 4

    def __init__(self, *, out_indices: Sequence[int], frozen_stages: int = -1, norm_eval: bool = False,
                 with_cp: bool = False, init_cfg: Optional[dict] = None):
        super().__init__()
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


def count_parameters(module: nn.Module, exclude: Iterable[str] = ()) -> int:
    """Number of parameter elements, skipping parameters whose name starts with any `exclude` prefix."""
    exclude = tuple(exclude)
    return sum(p.numel() for n, p in module.named_parameters() if not n.startswith(exclude))
