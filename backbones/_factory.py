"""Building by zoo name, for users outside OpenMMLab."""
from __future__ import annotations

import os
from typing import Any

from torch import nn

from . import families  # noqa: F401
from ._base import BACKBONE_CLASSES, DenseBackbone, InvalidArgumentError


def _zoo() -> dict[str, tuple[type[DenseBackbone], str]]:
    table = {}
    for cls in BACKBONE_CLASSES.values():
        for arch in cls.ARCHS:
            table[f'{cls.ZOO_PREFIX}-{arch}'] = (cls, arch)
    return table


def list_backbones(pattern: str = '') -> list[str]:
    """Zoo names of every variant (e.g. 'focalnet-tiny-srf', 'twins-svt-small', 'hrformer-small')."""
    return sorted(n for n in _zoo() if pattern in n)


def create_backbone(name: str, pretrained: bool | str = False, **overrides: Any) -> nn.Module:
    """Build a variant by zoo name; `pretrained=True` loads its default checkpoint from the zoo,
    a string loads that zoo checkpoint name, path or URL. `overrides` go to the constructor."""
    zoo = _zoo()
    if not isinstance(name, str) or name not in zoo:
        raise KeyError(f'unknown backbone {name!r}; list_backbones() gives: {sorted(zoo)}')
    if not isinstance(pretrained, (bool, str, os.PathLike)):
        raise InvalidArgumentError(f'create_backbone: pretrained={pretrained!r} is not accepted; accepted: False, '
                                   'True (the default checkpoint), or a zoo checkpoint name, path or URL')
    cls, arch = zoo[name]
    model = cls(arch=arch, **overrides)
    if pretrained:
        from .weights import load_pretrained
        if pretrained is True:
            from .zoo import default_checkpoint
            pretrained = default_checkpoint(name)
        load_pretrained(model, pretrained)
    else:
        model.init_weights()
    return model
