"""Swap the backbone of any mmdet / mmseg / mmpose config for a zoo backbone.

`swap_backbone(config, 'twins-svt-small')` returns the text of a thin child config of `config` (a path or a
`mmdet::`/`mmseg::`/`mmpose::` name) that: replaces the backbone (`type='backbones.<Class>'`, `arch=`),
sets the neck's / heads' input channels from the variant's `feature_info` (the backbone is built on the meta
device to read it), loads the pretrained checkpoint by zoo name, matches the data preprocessor's mean/std
to those weights, and sets the family's optimizer recipe (AdamW; no weight decay on norms, position
embeddings/PEG convolutions and relative position bias tables). Needs mmengine (to read the config).
"""
from __future__ import annotations

import os
import pprint
from typing import Any, Optional

import torch

from ._factory import _zoo
from .zoo import default_checkpoint, get_checkpoint

NO_DECAY_KEYS = {
    'norm': dict(decay_mult=0.0),                          # every LayerNorm/BatchNorm parameter
    'pos_block': dict(decay_mult=0.0),                     # Twins PEG position convolutions
    'relative_position_bias_table': dict(decay_mult=0.0),  # HRFormer window attention tables
    'absolute_pos_embed': dict(decay_mult=0.0),
}
RECIPES = {  # (lr, weight decay) per task, as the families' official dense recipes use with AdamW
    'det': (1e-4, 0.05),
    'seg': (6e-5, 0.01),
    'pose': (5e-4, 0.01),
}


def _load_config(config: str):
    from mmengine.config import Config
    if '::' in config:
        from mmengine.hub import get_config
        return get_config(config)
    return Config.fromfile(config)


def _task(model_cfg: dict) -> str:
    if 'decode_head' in model_cfg:
        return 'seg'
    if 'head' in model_cfg and model_cfg.get('type') == 'TopdownPoseEstimator':
        return 'pose'
    return 'det'


def _feature_info(cls: type, arch: str, out_indices: Optional[tuple[int, ...]]) -> list[dict]:
    kwargs = {} if out_indices is None else dict(out_indices=out_indices)
    with torch.device('meta'):
        return cls(arch=arch, **kwargs).feature_info


def swap_backbone(config: str, backbone: str, *, checkpoint: Optional[str] = None,
                  lr: Optional[float] = None, weight_decay: Optional[float] = None) -> str:
    """Text of a new config: `config` with its backbone replaced by zoo backbone `backbone`."""
    table = _zoo()
    if backbone not in table:
        raise KeyError(f'unknown backbone {backbone!r}; choose from {sorted(table)}')
    cls, arch = table[backbone]
    checkpoint = checkpoint or default_checkpoint(backbone)
    entry = get_checkpoint(checkpoint)
    cfg = _load_config(config)
    model = cfg.model
    task = _task(model)
    overrides: dict[str, Any] = {}
    out_indices: Optional[tuple[int, ...]] = None
    head_override: dict[str, Any] = {}

    if task == 'pose':
        head = model['head']
        deconvs = head.get('deconv_out_channels', (256, 256, 256)) or ()
        wanted_stride = 4 * 2 ** len(deconvs)
        default_info = _feature_info(cls, arch, None)
        all_info = default_info if len(default_info) > 1 else None
        if all_info is None:
            try:
                all_info = _feature_info(cls, arch, tuple(range(cls.NUM_STAGES)))
            except ValueError:
                all_info = default_info
        by_stride = {d['stride']: d for d in all_info}
        if wanted_stride in by_stride:
            chosen = by_stride[wanted_stride]
        else:  # e.g. HRFormer's stride-4 output under a ResNet SimpleBaseline head: drop the deconvs
            chosen = min(all_info, key=lambda d: d['stride'])
            head_override.update(deconv_out_channels=None, deconv_kernel_sizes=None)
        out_indices = (chosen['index'],)
        head_override['in_channels'] = chosen['channels']
        overrides['head'] = head_override
    else:
        info = _feature_info(cls, arch, None)
        if len(info) < 4:
            info = _feature_info(cls, arch, tuple(range(cls.NUM_STAGES)))
        channels = [d['channels'] for d in info]
        out_indices = tuple(d['index'] for d in info)
        if task == 'det':
            overrides['neck'] = dict(in_channels=channels)
        else:
            overrides['decode_head'] = dict(in_channels=channels)
            aux = model.get('auxiliary_head')
            if isinstance(aux, dict) and 'in_index' in aux:
                overrides['auxiliary_head'] = dict(in_channels=channels[aux['in_index']])
            if isinstance(model.get('neck'), dict) and 'in_channels' in model['neck']:
                overrides['neck'] = dict(in_channels=channels)
                overrides.pop('decode_head')

    overrides['backbone'] = dict(
        _delete_=True, type=f'backbones.{cls.__name__}', arch=arch, out_indices=list(out_indices),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint))
    if model.get('pretrained'):  # mmseg passes model.pretrained on to the backbone; ours use init_cfg
        overrides['pretrained'] = None
    preprocessor = model.get('data_preprocessor')
    if isinstance(preprocessor, dict):
        overrides['data_preprocessor'] = dict(mean=list(entry.mean), std=list(entry.std))
    base_lr, base_wd = RECIPES[task]
    optim_wrapper = dict(
        _delete_=True, type='OptimWrapper',
        optimizer=dict(type='AdamW', lr=lr or base_lr, betas=(0.9, 0.999),
                       weight_decay=base_wd if weight_decay is None else weight_decay),
        paramwise_cfg=dict(norm_decay_mult=0.0, custom_keys=NO_DECAY_KEYS))
    old_wrapper = cfg.get('optim_wrapper') or {}
    if old_wrapper.get('clip_grad'):
        optim_wrapper['clip_grad'] = old_wrapper['clip_grad']

    base = config if '::' in config else os.path.abspath(config)
    lines = [
        f'# {backbone} ({checkpoint}) swapped into {config} by `backbones swap`.',
        f'# Weights: {entry.name} ({entry.dataset}, {entry.license}); sources: '
        + ', '.join(s.host for s in entry.sources) + '.',
        f'_base_ = {base!r}',
        "custom_imports = dict(imports=['backbones'], allow_failed_imports=False)",
        'model = ' + pprint.pformat(overrides, sort_dicts=True, width=110),
        'optim_wrapper = ' + pprint.pformat(optim_wrapper, sort_dicts=True, width=110),
    ]
    return '\n'.join(lines) + '\n'


def write_swapped_config(config: str, backbone: str, out: str, **kwargs: Any) -> str:
    text = swap_backbone(config, backbone, **kwargs)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, 'w') as handle:
        handle.write(text)
    return out
