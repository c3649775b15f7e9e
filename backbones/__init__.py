"""Backbone model zoo for dense prediction: FocalNet, Twins (PCPVT, SVT) and HRFormer.

Pure PyTorch. OpenMMLab registration happens in `backbones.registry` (imported by mmengine for
`type='backbones.X'`, or by `custom_imports=dict(imports=['backbones'])`).
"""
from ._base import BACKBONE_CLASSES, DenseBackbone, count_parameters
from ._factory import create_backbone, list_backbones
from .weights import CheckpointError, LoadReport, convert_checkpoint, load_pretrained, read_checkpoint
from .families import focalnet, hrformer, twins  # noqa: F401

__version__ = '0.1.0'

for _name, _cls in BACKBONE_CLASSES.items():
    globals()[_name] = _cls


def _register_if_openmmlab_present() -> None:
    """`custom_imports=dict(imports=['backbones'])` must register too; harmless without mmengine."""
    try:
        import mmengine  # noqa: F401
    except ImportError:
        return
    from . import registry  # noqa: F401


_register_if_openmmlab_present()
