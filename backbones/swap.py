"""Swap the backbone of a stock mmdet / mmseg / mmpose config for a zoo backbone, keeping its meaning.

`swap_backbone(config, 'twins-svt-small')` returns the text of a thin child config of `config` (a path or a
`mmdet::`/`mmseg::`/`mmpose::` name). How it is derived (`plan_swap`):

1. The stock backbone is built on the meta device and run once: the stride and channels of each of its
   outputs ("positions"). Dilated backbones (ResNetV1c-D8, ...) count by their nominal strides (stride ×
   dilation), i.e. by depth: the deepest stage stays the deepest stage.
2. The consumers of those positions are read from the config: the first neck (`start_level`/`end_level`,
   `in_channels` as a list in either order, or as an int for necks that take the last map), or, without a
   neck, the heads (`in_index` int or list, `input_transform`, list-valued `decode_head` as in OCRNet,
   DeepLabV3+'s `c1_in_channels` on position 0, K-Net's `kernel_generate_head`, bottom-up pose necks).
3. Each consumed position gets the zoo backbone's level of the same (nominal) stride, from the variant's
   `feature_info` (family-agnostic), so the strides the prior generators / RoI extractors / codecs assume
   still hold; `out_indices` holds only the consumed levels, so no output norm is built unused.
4. A tiny instance of the variant runs forward and backward: if parameters get no gradient (a
   single-level consumer fed a shallow level of a hierarchical backbone, e.g. an HRNet-style heatmap head
   at stride 4), the consumer is fed that level concatenated with every deeper level resized to it
   (mmpose `FeatureMapProcessor(concat=True)`, mmseg `input_transform='resize_concat'`), the equivalent of
   HRNet's high-resolution representation; a seg head that takes one channel count (Segmenter) reads the
   deepest level instead. Anything still unused is an error. A ViT pyramid neck (BEiT's Feature2Pyramid) is
   dropped: the heads read the backbone's own pyramid. A model-level `Pretrained` init_cfg (a whole stock
   model) is dropped.
5. Data preprocessor: the checkpoint's mean/std and `bgr_to_rgb=True` (zoo weights take RGB). Optimizer:
   the family's AdamW recipe, keeping the stock `paramwise_cfg` (e.g. RTMDet's `bypass_duplicate`, DETR's
   backbone `lr_mult`), `clip_grad` and `accumulative_counts`, plus no weight decay on norms, position
   convolutions/embeddings and relative position tables.

Configs that cannot take a hierarchical backbone sensibly raise `SwapError` saying why (C4 RoI heads that
contain ResNet's last stage, stacked-hourglass heads, ViT-only necks and heads, detector wrappers).
Needs mmengine and the config's framework (mmdet, mmseg or mmpose).
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import os
import pprint
from typing import Any, Callable, Optional

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
TASKS = {'mmdet': 'det', 'mmseg': 'seg', 'mmpose': 'pose'}
PROBE_SIZE = 256  # input side of the meta-device run of the stock backbone (a multiple of 64)

UNSUPPORTED_NECKS = {
    'RFP': 'DetectoRS\' recursive FPN feeds its outputs back into the backbone (DetectoRS_ResNet.rfp_forward), '
           'which no other backbone implements',
    'MLANeck': 'SETR-MLA adds four ViT maps of one stride to each other; a hierarchical backbone gives four '
               'strides',
    'JPU': 'FastFCN\'s joint pyramid upsampling replaces the dilation of a ResNet-D32 and is tied to it',
}
CONTIGUOUS_HEADS = {   # heads built on mmcv ops that refuse non-contiguous (e.g. channels-last) maps
    'DEKRHead': 'runs mmcv DeformConv2d, which needs contiguous maps',
}

PYRAMID_NECKS = {  # necks that build a pyramid from a single-stride ViT (a hierarchical backbone is one): the
    'Feature2Pyramid': ('rescales', [4, 2, 1, 0.5]),     # key of their per-output scale factors, and its default
    'MultiLevelNeck': ('scales', [0.5, 1, 2, 4]),
}
VIT_HEADS = {
    'DPTHead': 'DPT reassembles ViT tokens (with the class token) from four layers of one stride',
    'SETRUPHead': 'SETR decodes a single-stride ViT map', 'SETRMLAHead': 'SETR-MLA needs four ViT maps of one stride',
}
MULTI_STAGE_HEADS = {
    'CPMHead': 'CPM supervises each of its stock network\'s stages (one map per stage, all at stride 8)',
    'MSPNHead': 'MSPN/RSN supervise every unit of every stage of their stacked stock network',
}
ONE_CHANNEL_HEADS = {'SegmenterMaskTransformerHead'}
"""Single-map seg heads whose layers take `in_channels` as one int (no `resize_concat`)."""
WRAPPED = ('detector', 'teacher', 'student', 'segmentor')


try:  # the package's one error type for bad arguments (the CLI reports it as one line on stderr)
    from ._base import InvalidArgumentError as _ArgumentError
except ImportError:  # pragma: no cover - older _base
    _ArgumentError = ValueError


class SwapError(_ArgumentError):
    """A config the swap cannot take sensibly, or a backbone that cannot serve it; the message says why."""


@dataclasses.dataclass(frozen=True)
class Position:
    """One output of the stock backbone."""
    stride: int        # measured
    nominal: int       # stride × dilation: the stride a non-dilated backbone has at that depth
    channels: int


@dataclasses.dataclass
class Consumer:
    """Something in the config that reads backbone outputs: which positions, and how to rewrite it."""
    where: str
    positions: list[int]
    rewrite: Callable[[dict[int, int], dict[int, int]], None]   # (old → new position, old → channels)
    concat: Optional[Callable[[list[int]], None]] = None         # feed [levels...] resized & concatenated
    deepest: bool = False   # may read the deepest level instead (a decode head resizes its output anyway)


@dataclasses.dataclass
class SwapPlan:
    """Everything `swap_backbone` writes, and why."""
    config: str
    backbone: str
    checkpoint: str
    task: str
    out_indices: tuple[int, ...]
    stock_strides: list[int]          # per consumed stock position, measured
    new_strides: list[int]            # per new output
    model_overrides: dict
    optim_wrapper: dict
    notes: list[str]


# ---- reading the stock config ---------------------------------------------------------------------------
def _load_config(config: str):
    """The stock config (read once per process: the swap copies what it changes)."""
    if not isinstance(config, str) or not config:
        raise SwapError(f'swap: config={config!r} is not accepted; accepted: a config path or a '
                        "'mmdet::'/'mmseg::'/'mmpose::' config name")
    key = config if '::' in config else os.path.abspath(config)
    mtime = os.path.getmtime(key) if os.path.isfile(key) else None
    return _read_config(key, mtime)


@functools.lru_cache(maxsize=64)
def _read_config(config: str, mtime: Optional[float]):
    if '::' in config:   # the package's own config file (what mmengine.hub.get_config reads, without its metafiles)
        from mmengine.utils import get_installed_path
        package, relative = config.split('::', 1)
        package = {'mmseg': 'mmsegmentation'}.get(package, package)
        try:
            root = get_installed_path(package)
        except Exception as err:  # noqa: BLE001 - not installed
            raise SwapError(f'swap: config={config!r} needs {package} installed ({err})') from err
        for folder in ('.mim/configs', 'configs'):
            if os.path.isfile(path := os.path.join(root, folder, relative)):
                return _parse(path, config)
        raise SwapError(f'swap: config={config!r} is not accepted (no such config in {package}); accepted: '
                        f'a path relative to {os.path.join(root, ".mim", "configs")}')
    if not os.path.isfile(config):
        raise SwapError(f'swap: config={config!r} is not accepted (no such file); accepted: a config path or a '
                        "name such as 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'")
    return _parse(config, config)


def _parse(path: str, config: str):
    from mmengine.config import Config
    from mmengine.config.utils import ConfigParsingError
    try:
        return Config.fromfile(path)
    except (ConfigParsingError, SyntaxError, ImportError) as err:
        raise SwapError(f'swap: config={config!r} could not be read by mmengine: {err}') from err


def _plain(obj: Any) -> Any:
    """ConfigDicts and tuples → plain dicts and lists (deep copy)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return copy.deepcopy(obj)


def _type(cfg: Optional[dict]) -> str:
    name = (cfg or {}).get('type', '')
    name = name if isinstance(name, str) else getattr(name, '__name__', str(name))
    return name.split('.')[-1]


def _scope(cfg, config: str) -> str:
    scope = cfg.get('default_scope') or (config.split('::')[0] if '::' in config else None)
    if scope not in TASKS:
        raise SwapError(f'config {config!r}: default_scope {scope!r} is not one of {sorted(TASKS)}; '
                        'the swap handles mmdet, mmseg and mmpose configs')
    return scope


@functools.lru_cache(maxsize=None)
def _register(scope: str) -> None:
    import importlib
    try:
        importlib.import_module(f'{scope}.utils').register_all_modules(init_default_scope=False)
    except ImportError as err:
        raise SwapError(f'reading a {scope} config needs {scope} installed ({err})') from err


def _stock_positions(backbone_cfg: dict, scope: str) -> list[Position]:
    """Stride and channels of every output of the stock backbone (meta device; CPU if that fails)."""
    _register(scope)
    cfg = copy.deepcopy(backbone_cfg)
    cfg['init_cfg'] = None
    cfg.pop('pretrained', None)
    key = f'{scope}:{sorted(cfg.items())!r}'
    if key not in _PROBED:
        _PROBED[key] = _probe(scope, cfg)
    return list(_PROBED[key])


_PROBED: dict[str, tuple[Position, ...]] = {}
"""Stock backbone config → its outputs (probing builds the stock backbone: once per process)."""


def _probe(scope: str, cfg: dict) -> tuple[Position, ...]:
    from mmengine.registry import MODELS, DefaultScope
    errors = []
    for device, side in (('meta', PROBE_SIZE), ('cpu', 128)):
        if 'img_size' in cfg:   # ViTs (BEiT) build position tables for one input size
            cfg = dict(cfg, img_size=(side, side))
        try:
            with DefaultScope.overwrite_default_scope(scope), torch.device(device), torch.no_grad():
                model = MODELS.build(copy.deepcopy(cfg))
                model.eval()   # (some stock train() overrides return None)
                outs = model(torch.zeros(1, 3, side, side))
            break
        except Exception as err:  # noqa: BLE001 - reported below with the stock type
            errors.append(f'{device}: {type(err).__name__}: {err}')
    else:
        raise SwapError(f'could not run the stock backbone {_type(cfg)!r} to read its output strides: '
                        + '; '.join(errors))
    outs = [outs] if isinstance(outs, torch.Tensor) else list(outs)
    if not all(isinstance(o, torch.Tensor) and o.dim() == 4 for o in outs):
        raise SwapError(f'the stock backbone {_type(cfg)!r} does not return a tuple of N×C×H×W maps')
    dilations = cfg.get('dilations', getattr(model, 'dilations', None))
    out_indices = list(getattr(model, 'out_indices', cfg.get('out_indices', ())) or ())
    positions = []
    for p, out in enumerate(outs):
        stride = round(side / out.shape[-1])
        dilation = 1
        if dilations is not None and len(out_indices) == len(outs) and out_indices[p] < len(dilations):
            dilation = int(dilations[out_indices[p]])
        positions.append(Position(stride=stride, nominal=stride * dilation, channels=int(out.shape[1])))
    return tuple(positions)


# ---- consumers ------------------------------------------------------------------------------------------
def _refuse_early(model: dict) -> None:
    """Config-level reasons to refuse, before the stock backbone is built."""
    neck = model.get('neck')
    first = neck[0] if isinstance(neck, list) and neck else neck
    if isinstance(first, dict) and _type(first) in UNSUPPORTED_NECKS:
        raise SwapError(f'model.neck type {_type(first)!r}: {UNSUPPORTED_NECKS[_type(first)]}')
    roi = model.get('roi_head')
    if not first and isinstance(roi, dict) and roi.get('shared_head'):
        raise SwapError('model.roi_head.shared_head: this C4 recipe runs ResNet\'s last stage inside the RoI head '
                        f'({_type(roi["shared_head"])}, fixed ResNet input channels) on stride-16 features; '
                        'a hierarchical backbone has its own last stage: use the recipe\'s FPN version instead')
    head = model.get('head')
    if isinstance(head, dict) and _type(head) in MULTI_STAGE_HEADS:
        raise SwapError(f'model.head type {_type(head)!r}: {MULTI_STAGE_HEADS[_type(head)]}; a hierarchical backbone '
                        'makes one pass')
    for key in ('decode_head', 'auxiliary_head'):
        heads = model.get(key)
        for head in heads if isinstance(heads, list) else [heads]:
            if isinstance(head, dict) and VIT_HEADS.get(_type(head)):
                raise SwapError(f'model.{key} type {_type(head)!r}: {VIT_HEADS[_type(head)]}; a hierarchical '
                                'backbone has no such output')
    if isinstance(neck, list) and neck and not isinstance(first, dict):
        raise SwapError(f'model.neck[0] is {first!r}; the swap reads a neck given as a dict')


def _pyramid_positions(neck: dict, positions: list[Position]) -> list[Position]:
    """The maps a ViT pyramid neck (Feature2Pyramid) makes: what the heads read once it is dropped."""
    key, default = PYRAMID_NECKS[_type(neck)]
    rescales = neck.get(key, default)
    if len(rescales) != len(positions):
        raise SwapError(f'model.neck {_type(neck)}: {len(rescales)} rescales for {len(positions)} backbone outputs')
    return [Position(stride=round(p.stride / r), nominal=round(p.nominal / r), channels=p.channels)
            for p, r in zip(positions, rescales)]


def _neck_consumers(model: dict, n: int, positions: list[Position]) -> Optional[list[Consumer]]:
    """Consumers when the config has a neck (None: the neck was dropped, the heads consume)."""
    neck = model['neck']
    first = neck[0] if isinstance(neck, list) else neck
    kind = _type(first)
    where = 'model.neck' + ('[0]' if isinstance(neck, list) else '')
    if kind in PYRAMID_NECKS:
        model['neck'] = None
        return None
    head = model.get('head')
    if kind == 'FeatureMapProcessor':   # mmpose: select / concat / rescale, then the head
        select = first.get('select_index')
        select = list(range(n)) if select is None else ([select] if isinstance(select, int) else list(select))
        select = [s % n for s in select]
        used = select if first.get('concat') else [select[-1]]

        def rewrite(new: dict[int, int], channels: dict[int, int]) -> None:
            if first.get('select_index') is not None:
                first['select_index'] = [new[s] for s in select]
            if isinstance(head, dict) and 'in_channels' in head:
                head['in_channels'] = sum(channels[s] for s in used)
        return [Consumer(where, sorted(set(select)), rewrite)]
    if kind == 'GlobalAveragePooling':  # pools every map; the head takes the last
        def rewrite(new: dict[int, int], channels: dict[int, int]) -> None:
            if isinstance(head, dict) and 'in_channels' in head:
                head['in_channels'] = channels[n - 1]
        return [Consumer(where, [n - 1], rewrite)]
    in_channels = first.get('in_channels')
    if isinstance(in_channels, int):    # e.g. YOLOF's DilatedEncoder: the last map
        def rewrite(new: dict[int, int], channels: dict[int, int]) -> None:
            first['in_channels'] = channels[n - 1]
        return [Consumer(where, [n - 1], rewrite)]
    if not isinstance(in_channels, list):
        raise SwapError(f'{where} type {kind!r} has no in_channels; the swap cannot tell which backbone '
                        'outputs it reads')
    if len(in_channels) != n:
        raise SwapError(f'{where}.in_channels has {len(in_channels)} entries but the stock backbone gives '
                        f'{n} outputs')
    stock = [p.channels for p in positions]
    reverse = in_channels == stock[::-1] and in_channels != stock   # e.g. YOLOV3Neck lists the deepest first
    start = first.get('start_level', 0)
    end = first.get('end_level', -1)
    used = list(range(start, n if end == -1 else end + 1))

    def rewrite(new: dict[int, int], channels: dict[int, int]) -> None:
        chans = [channels[p] for p in (reversed(used) if reverse else used)]
        first['in_channels'] = chans
        if 'start_level' in first:
            first['start_level'] = 0
        if first.get('end_level', -1) != -1:
            first['end_level'] = -1
    return [Consumer(where, used, rewrite)]


def _seg_head_consumers(head: dict, where: str, n: int) -> list[Consumer]:
    kind = _type(head)
    if isinstance(head.get('kernel_generate_head'), dict):     # K-Net: the kernel-generate head reads the maps
        return _seg_head_consumers(head['kernel_generate_head'], where + '.kernel_generate_head', n)
    has_index = 'in_index' in head    # heads without one (Mask2Former) read every map or the last one
    index = head.get('in_index', list(range(n)) if isinstance(head.get('in_channels'), list) else -1)
    single = isinstance(index, int)
    indices = [i % n for i in ([index] if single else index)]
    used = sorted(set(indices))
    c1 = head.get('c1_in_channels') and kind == 'DepthwiseSeparableASPPHead'   # DeepLabV3+ reads inputs[0]
    if c1:
        used = sorted(set(used) | {0})

    def rewrite(new: dict[int, int], channels: dict[int, int]) -> None:
        if has_index:
            head['in_index'] = new[indices[0]] if single else [new[i] for i in indices]
        head['in_channels'] = channels[indices[0]] if single else [channels[i] for i in indices]
        if c1:
            if new[0] != 0:
                raise SwapError(f'{where}: DeepLabV3+ reads backbone output 0 as c1; it must stay first')
            head['c1_in_channels'] = channels[0]

    def concat(levels_channels: list[int]) -> None:
        head['in_index'] = list(range(len(levels_channels)))
        head['in_channels'] = list(levels_channels)
        head['input_transform'] = 'resize_concat'
    can_concat = single and not c1 and kind not in ONE_CHANNEL_HEADS
    return [Consumer(where, used, rewrite, concat if can_concat else None, deepest=single and not c1)]


def _head_consumers(model: dict, task: str, positions: list[Position]) -> list[Consumer]:
    """Consumers when no neck sits between backbone and heads."""
    n = len(positions)
    if task == 'seg':
        found = []
        for key in ('decode_head', 'auxiliary_head'):
            heads = model.get(key)
            if isinstance(heads, dict):
                found += _seg_head_consumers(heads, f'model.{key}', n)
            elif isinstance(heads, list):
                for i, head in enumerate(heads):
                    found += _seg_head_consumers(head, f'model.{key}[{i}]', n)
        return found
    if task == 'pose':
        head = model.get('head')
        if n > 1 and len({p.stride for p in positions}) == 1:
            raise SwapError(f'model.head ({_type(head)}) is fed {n} maps of the same stride {positions[0].stride} '
                            'by the stock backbone; a hierarchical backbone has one map per stride')
        if not isinstance(head, dict) or not isinstance(head.get('in_channels'), int):
            raise SwapError(f'model.head {_type(head)!r} takes in_channels='
                            f'{(head or {}).get("in_channels")!r}; only heads that read one map (feats[-1]) '
                            'can be fed without a neck')

        def rewrite(new: dict[int, int], channels: dict[int, int]) -> None:
            head['in_channels'] = channels[n - 1]

        def concat(levels_channels: list[int]) -> None:
            model['neck'] = dict(type='FeatureMapProcessor', concat=True)
            head['in_channels'] = sum(levels_channels)
        return [Consumer('model.head', [n - 1], rewrite, concat)]
    found = []
    for key, head in model.items():
        if not key.endswith('head') or not isinstance(head, dict):
            continue
        in_channels = head.get('in_channels')
        if isinstance(in_channels, list):
            if len(in_channels) != n:
                raise SwapError(f'model.{key}.in_channels has {len(in_channels)} entries for {n} backbone outputs')

            def rewrite(new: dict[int, int], channels: dict[int, int], head: dict = head) -> None:
                head['in_channels'] = [channels[p] for p in range(n)]
            found.append(Consumer(f'model.{key}', list(range(n)), rewrite))
        elif isinstance(in_channels, int):
            if n > 1 and len({p.stride for p in positions}) == 1:
                raise SwapError(f'model.{key} ({_type(head)}) reads {n} maps of the same stride '
                                f'{positions[0].stride} (e.g. the outputs of stacked hourglasses); a hierarchical '
                                'backbone has one map per stride')
            if n != 1:
                raise SwapError(f'model.{key} takes one in_channels ({in_channels}) from {n} backbone outputs '
                                f'without a neck ({_type(head)}); the swap cannot tell which it reads')

            def rewrite(new: dict[int, int], channels: dict[int, int], head: dict = head) -> None:
                head['in_channels'] = channels[0]
            found.append(Consumer(f'model.{key}', [0], rewrite))
    if not found:
        raise SwapError('no neck and no head with in_channels: the swap cannot tell what reads the backbone')
    return found


# ---- the zoo backbone -----------------------------------------------------------------------------------
_MEMO: dict[tuple, Any] = {}


def _memo(key: tuple, compute: Callable[[], Any]) -> Any:
    """Per-process memo for builds keyed by (class, repr(arch), ...): archs may be dicts."""
    if key not in _MEMO:
        _MEMO[key] = compute()
    return _MEMO[key]


def _levels(cls: type, arch: str | dict) -> tuple[dict, ...]:
    """feature_info of every level the variant can output (built on the meta device)."""
    def compute() -> tuple[dict, ...]:
        with torch.device('meta'):
            try:
                model = cls(arch=arch, out_indices=tuple(range(cls.NUM_STAGES)))
            except (ValueError, KeyError):
                model = cls(arch=arch)
        return tuple(sorted((dict(d) for d in model.feature_info), key=lambda d: d['index']))
    return _memo((cls, repr(arch), 'levels'), compute)


def unused_parameters(cls: type, arch: str | dict, out_indices: tuple[int, ...]) -> tuple[str, ...]:
    """Parameters of `cls(arch, out_indices=...)` that get no gradient from the sum of its outputs. A named
    variant runs as the family's micro arch (same code paths; on the meta device where it has none);
    a dict arch runs as given."""
    def compute() -> tuple[str, ...]:
        small: Optional[dict] = arch if isinstance(arch, dict) else None
        if small is None:
            try:
                small = cls.micro_arch(arch)
            except NotImplementedError:
                pass
        state = torch.random.get_rng_state()
        torch.manual_seed(0)
        try:
            with torch.device('cpu' if small is not None else 'meta'):
                model = cls(arch=small if small is not None else arch, out_indices=out_indices)
                model.train()
                outs = model(torch.randn(1, 3, 64, 64))
            sum(o.float().sum() for o in outs).backward()
        finally:
            torch.random.set_rng_state(state)
        return tuple(n for n, p in model.named_parameters() if p.requires_grad and p.grad is None)
    return _memo((cls, repr(arch), tuple(out_indices)), compute)


# ---- the plan ---------------------------------------------------------------------------------------------
def _diff(old: Any, new: Any) -> dict:
    """What a child config must say to turn `old` into `new` (dicts merge; lists and values replace)."""
    out = {}
    for key, value in new.items():
        before = old.get(key, KeyError) if isinstance(old, dict) else KeyError
        if isinstance(value, dict) and isinstance(before, dict):
            if _type(value) != _type(before):
                out[key] = dict(value, _delete_=True)
            elif (sub := _diff(before, value)):
                out[key] = sub
        elif before is KeyError or _plain(value) != _plain(before):
            out[key] = value
    return out


DEFAULT_PARAMWISE_KEYS = ('custom_keys', 'bias_lr_mult', 'bias_decay_mult', 'norm_decay_mult', 'dwconv_decay_mult',
                          'flat_decay_mult', 'dcn_offset_lr_mult', 'bypass_duplicate')
"""The paramwise options of mmengine's DefaultOptimWrapperConstructor (what the swapped config uses)."""


def _optim_wrapper(stock: dict, task: str, lr: Optional[float], weight_decay: Optional[float],
                   notes: list[str]) -> dict:
    base_lr, base_wd = RECIPES[task]
    paramwise = _plain(stock.get('paramwise_cfg') or {})
    if stock.get('constructor') not in (None, 'DefaultOptimWrapperConstructor'):
        dropped = sorted(set(paramwise) - set(DEFAULT_PARAMWISE_KEYS))
        paramwise = {k: v for k, v in paramwise.items() if k in DEFAULT_PARAMWISE_KEYS}
        notes.append(f'the stock optimizer constructor {stock["constructor"]} (made for the stock backbone) '
                     f'is replaced by the default one; dropped its options {dropped}')
    custom = paramwise.get('custom_keys') or {}
    backbone_lr = (custom.get('backbone') or {}).get('lr_mult')
    for key, value in NO_DECAY_KEYS.items():
        if key in custom:
            continue   # the stock recipe's own setting wins
        value = dict(value)
        if backbone_lr is not None and key != 'norm':   # backbone-only keys keep the stock backbone lr_mult
            value['lr_mult'] = backbone_lr
        custom[key] = value
    paramwise['custom_keys'] = custom
    paramwise.setdefault('norm_decay_mult', 0.0)
    wrapper = dict(_delete_=True, type='OptimWrapper',
                   optimizer=dict(type='AdamW', lr=lr or base_lr, betas=(0.9, 0.999),
                                  weight_decay=base_wd if weight_decay is None else weight_decay),
                   paramwise_cfg=paramwise)
    for key in ('clip_grad', 'accumulative_counts'):
        if stock.get(key):
            wrapper[key] = _plain(stock[key])
    return wrapper


def plan_swap(config: str, backbone: str, *, checkpoint: Optional[str] = None, lr: Optional[float] = None,
              weight_decay: Optional[float] = None, arch: Optional[dict] = None) -> SwapPlan:
    """Work out the swap of zoo backbone `backbone` into `config` (see the module doc). `arch`: a dict arch
    of the same family to use instead of the variant's (e.g. `cls.micro_arch(...)` in tests)."""
    table = _zoo()
    if backbone not in table:
        raise SwapError(f'swap: backbone={backbone!r} is not accepted; accepted: a zoo name, one of '
                        f'{sorted(table)}')
    for name, value in (('lr', lr), ('weight_decay', weight_decay)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or value < 0 or (name == 'lr' and value == 0)):
            raise SwapError(f'swap: {name}={value!r} is not accepted; accepted: a '
                            f'{"positive" if name == "lr" else "non-negative"} number')
    cls, variant = table[backbone]
    if arch is not None and not isinstance(arch, dict):
        raise SwapError(f'swap: arch={arch!r} is not accepted; accepted: None (the zoo variant) or a dict of '
                        f'{cls.__name__} arguments')
    arch = variant if arch is None else arch
    checkpoint = checkpoint or default_checkpoint(backbone)
    entry = get_checkpoint(checkpoint)
    cfg = _load_config(config)
    scope = _scope(cfg, config)
    task = TASKS[scope]
    stock_model = _plain(cfg.get('model') or {})
    if not isinstance(stock_model.get('backbone'), dict):
        wrapped = [k for k in WRAPPED if isinstance(stock_model.get(k), dict)]
        raise SwapError(f'config {config!r} has no model.backbone'
                        + (f' (model type {_type(stock_model)!r} wraps model.{wrapped[0]}: swap into that '
                           'model\'s own config)' if wrapped else ''))
    model = copy.deepcopy(stock_model)
    _refuse_early(model)
    positions = _stock_positions(model['backbone'], scope)
    n = len(positions)
    notes: list[str] = []

    consumers = None
    if model.get('neck'):
        neck = model['neck']
        consumers = _neck_consumers(model, n, positions)
        if consumers is None:
            positions = _pyramid_positions(neck, positions)
            notes.append(f'the stock neck {_type(neck)} builds a pyramid from a single-stride ViT; dropped: '
                         'the heads read the backbone\'s own pyramid')
    if consumers is None:
        consumers = _head_consumers(model, task, positions)
    used = sorted({p for c in consumers for p in c.positions})

    levels = _levels(cls, arch)
    by_stride: dict[int, dict] = {}
    for level in levels:
        by_stride.setdefault(level['stride'], level)
    missing = sorted({positions[p].nominal for p in used} - set(by_stride))
    if missing:
        raise SwapError(f'{config}: its heads need backbone strides {[positions[p].nominal for p in used]}; '
                        f'{backbone} gives {sorted(by_stride)} (missing {missing})')
    chosen = [by_stride[positions[p].nominal]['index'] for p in used]
    if len(set(chosen)) != len(chosen):
        raise SwapError(f'{config}: the stock backbone {_type(stock_model["backbone"])} feeds several maps of the '
                        f'same stride (strides {[positions[p].stride for p in used]}, e.g. stacked-hourglass '
                        'outputs); a hierarchical backbone has one map per stride')
    if chosen != sorted(chosen):
        raise SwapError(f'{config}: stock outputs are not ordered by stride ({[positions[p].stride for p in used]})')
    out_indices = tuple(chosen)
    info = {d['index']: d for d in levels}
    unused = unused_parameters(cls, arch, out_indices)
    if unused:
        deeper = [d['index'] for d in levels if d['index'] >= out_indices[0]]
        if len(used) == 1 and all(c.concat for c in consumers) and len(deeper) > 1:
            out_indices = tuple(deeper)
            for consumer in consumers:
                consumer.concat([info[i]['channels'] for i in out_indices])
            notes.append(f'{", ".join(c.where for c in consumers)} read one map at stride '
                         f'{info[chosen[0]]["stride"]}; {backbone} output only there leaves {len(unused)} '
                         f'parameters without gradient, so it gets levels {list(out_indices)} resized to that '
                         'stride and concatenated (as HRNet\'s high-resolution representation)')
            unused = unused_parameters(cls, arch, out_indices)
        elif len(used) == 1 and all(c.deepest for c in consumers) and len(deeper) > 1:
            out_indices = (deeper[-1],)
            new = {used[0]: 0}
            for consumer in consumers:
                consumer.rewrite(new, {used[0]: info[deeper[-1]]['channels']})
            notes.append(f'{", ".join(c.where for c in consumers)} read one map (stride '
                         f'{info[chosen[0]]["stride"]}) and take one channel count; {backbone} output only '
                         f'there leaves {len(unused)} parameters without gradient, so they read its deepest '
                         f'level (stride {info[deeper[-1]]["stride"]}) and resize their output as before')
            unused = unused_parameters(cls, arch, out_indices)
        if unused:
            raise SwapError(f'{config}: its heads read strides {[info[i]["stride"] for i in chosen]} only; '
                            f'{backbone} with out_indices={list(out_indices)} leaves {len(unused)} parameters '
                            f'without gradient (e.g. {list(unused[:3])}), which breaks DDP, and these heads '
                            'cannot take the deeper levels')
    else:
        new = {p: i for i, p in enumerate(used)}
        channels = {p: info[c]['channels'] for p, c in zip(used, chosen)}
        for consumer in consumers:
            consumer.rewrite(new, channels)
    stock_strides = [positions[p].stride for p in used]
    new_strides = [info[i]['stride'] for i in out_indices]
    dilated = [p for p in used if positions[p].nominal != positions[p].stride]
    if dilated:
        notes.append(f'the stock backbone is dilated (strides {stock_strides}); {backbone} has no dilated mode, '
                     f'so its levels of the same depth are used (strides {[info[i]["stride"] for i in chosen]})')

    model['backbone'] = dict(type=f'backbones.{cls.__name__}', arch=arch, out_indices=list(out_indices),
                             init_cfg=dict(type='Pretrained', checkpoint=checkpoint))
    init = model.get('init_cfg')
    if isinstance(init, dict) and init.get('type') == 'Pretrained':
        model['init_cfg'] = None
        notes.append(f'the stock model-level init_cfg loaded a whole {_type(stock_model["backbone"])} model '
                     f'({init.get("checkpoint")}); dropped, the backbone loads its own weights')
    if model.get('pretrained'):   # mmseg passes model.pretrained on to the backbone; ours use init_cfg
        model['pretrained'] = None
    preprocessor = model.get('data_preprocessor')
    if isinstance(preprocessor, dict):
        preprocessor.update(mean=list(entry.mean), std=list(entry.std), bgr_to_rgb=True)
        if stock_model['data_preprocessor'].get('bgr_to_rgb') is not True:
            notes.append('stock preprocessor fed BGR (caffe-style) images; the zoo weights take RGB: '
                         'bgr_to_rgb=True')
    else:
        notes.append('no model.data_preprocessor dict: normalise inputs with '
                     f'mean={list(entry.mean)}, std={list(entry.std)} (RGB) yourself')
    contiguous_only = CONTIGUOUS_HEADS.get(_type(model.get('head')))
    if contiguous_only:
        inner = model.get('neck')
        if isinstance(inner, dict) and '.' not in _type(inner):
            inner = dict(inner, type=f'{scope}.{_type(inner)}')
        model['neck'] = dict(type='backbones.ContiguousMaps', neck=inner)
        notes.append(f'model.head {_type(model["head"])} {contiguous_only}; the zoo backbones return channels-last '
                     'maps, so the neck is wrapped in backbones.ContiguousMaps')
    overrides = _diff(stock_model, model)
    overrides['backbone'] = dict(model['backbone'], _delete_=True)
    if contiguous_only:
        overrides['neck'] = dict(model['neck'], _delete_=True)
    wrapper = _optim_wrapper(_plain(cfg.get('optim_wrapper') or {}), task, lr, weight_decay, notes)
    return SwapPlan(config=config, backbone=backbone, checkpoint=checkpoint, task=task, out_indices=out_indices,
                    stock_strides=stock_strides, new_strides=new_strides, model_overrides=overrides,
                    optim_wrapper=wrapper, notes=notes)


def render_config(plan: SwapPlan) -> str:
    """The child config text of a plan."""
    entry = get_checkpoint(plan.checkpoint)
    base = plan.config if '::' in plan.config else os.path.abspath(plan.config)
    lines = [
        f'# {plan.backbone} ({plan.checkpoint}) swapped into {plan.config} by `backbones swap`.',
        f'# Weights: {entry.name} ({entry.dataset}, {entry.license}); sources: '
        + ', '.join(s.host for s in entry.sources) + '.',
        f'# Backbone outputs: out_indices={list(plan.out_indices)}, strides {plan.new_strides} '
        f'(stock backbone: {plan.stock_strides}).',
        *(f'# Note: {note}.' for note in plan.notes),
        f'_base_ = {base!r}',
        "custom_imports = dict(imports=['backbones'], allow_failed_imports=False)",
        'model = ' + pprint.pformat(plan.model_overrides, sort_dicts=True, width=110),
        'optim_wrapper = ' + pprint.pformat(plan.optim_wrapper, sort_dicts=True, width=110),
    ]
    return '\n'.join(lines) + '\n'


def swap_backbone(config: str, backbone: str, **kwargs: Any) -> str:
    """Text of a new config: `config` with its backbone replaced by zoo backbone `backbone` (keyword
    arguments: `checkpoint`, `lr`, `weight_decay`, as `plan_swap`)."""
    return render_config(plan_swap(config, backbone, **kwargs))


def write_swapped_config(config: str, backbone: str, out: str, **kwargs: Any) -> str:
    """Write `swap_backbone(config, backbone, **kwargs)` to `out`; returns `out`."""
    return write_config(plan_swap(config, backbone, **kwargs), out)


def write_config(plan: SwapPlan, out: str) -> str:
    """Write the child config of `plan` to `out` (parent folders created); returns `out`."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, 'w') as handle:
        handle.write(render_config(plan))
    return out
