"""Backbone model zoo for dense prediction: FocalNet, Twins (PCPVT, SVT), HRFormer and S3 (AutoFormerV2).

Pure PyTorch. OpenMMLab registration happens in `backbones.registry` (imported by mmengine for
`type='backbones.X'`, or by `custom_imports=dict(imports=['backbones'])`).
"""
from ._base import BACKBONE_CLASSES, DenseBackbone, InvalidArgumentError, count_parameters
from ._factory import create_backbone, list_backbones
from .weights import CheckpointError, LoadReport, convert_checkpoint, load_pretrained, read_checkpoint
from .families import focalnet, hrformer, s3, twins  # noqa: F401
from .adapters import (AdapterError, adapter_state_dict, load_adapters, merge_adapters,  # noqa: E402
                       save_adapters)
from .slimming import (at_width, channel_map, depth_stages, export_width, get_depths, get_width,  # noqa: E402
                       pad_to_full, set_width, trained_widths, width_groups)
from .lowrank import LowRankConv1x1, LowRankLinear  # noqa: E402  (registers `lowrank=`)
from . import lean as _lean  # noqa: E402,F401  (registers `lean=`)
from .memory import predict as predict_memory  # noqa: E402

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
