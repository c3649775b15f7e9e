"""The package's only link to OpenMMLab: a child of mmengine's MODELS registry with scope `backbones`.

Configs of mmdet, mmseg and mmpose say `type='backbones.FocalNet'`; mmengine imports
`backbones.registry` for the `backbones.` scope by itself, so `custom_imports` is optional.
The class names would clash with mmseg's `PCPVT`/`SVT` and mmpose's `HRFormer` if registered in their
scopes; registering only here avoids that.
"""
from __future__ import annotations

from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

from . import compat  # noqa: F401  (OpenMMLab workarounds; see compat.py)
from ._base import BACKBONE_CLASSES
from . import families  # noqa: F401  (imports every family, filling BACKBONE_CLASSES)

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='backbones', locations=['backbones.registry'])

for _name, _cls in sorted(BACKBONE_CLASSES.items()):
    MODELS.register_module(name=_name, module=_cls)


@MODELS.register_module()
def CutMixSegDataPreProcessor(cutmix: dict | None = None, **kwargs):  # noqa: N802 (a config type name)
    """mmseg's `SegDataPreProcessor` (same arguments) with `backbones.augment.SegCutMix(**cutmix)` applied
    to training batches; mmseg 1.2.2 calls `batch_augments` as given, so a config cannot build it there.
    Config switch: `data_preprocessor=dict(type='backbones.CutMixSegDataPreProcessor',
    cutmix=dict(alpha=1.0, prob=1.0))`."""
    from mmseg.models.data_preprocessor import SegDataPreProcessor
    from .augment import SegCutMix
    preprocessor = SegDataPreProcessor(**kwargs)
    if cutmix is not None:
        preprocessor.batch_augments = SegCutMix(**cutmix)
    return preprocessor


def register_all_modules(init_default_scope: bool = False) -> None:
    """For notebooks and `init_model` users: import everything; optionally make `backbones` the scope."""
    if init_default_scope:
        from mmengine.registry import DefaultScope
        DefaultScope.get_instance('backbones', scope_name='backbones')
