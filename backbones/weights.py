"""Reading, converting and loading checkpoints: the one path every pretrained load takes.

`load_pretrained(model, source)` = resolve the source (zoo name, URL or path) → read it safely →
unwrap the container and prefixes → convert the layout (the family's converter) → adapt shapes where
the official dense loaders did → load strictly except for declared ignorable/optional keys → report.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import re
from typing import Any, Mapping, Optional

import torch
from torch import nn

from ._base import CONVERTERS, InvalidArgumentError

logger = logging.getLogger('backbones')

CONTAINER_KEYS = ('state_dict', 'model', 'module', 'model_state', 'params')
WRAPPER_PREFIXES = ('module.', 'model.', '_orig_mod.')
BACKBONE_PREFIX = 'backbone.'


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as asked: wrong layout, wrong keys or shapes, unsafe file."""


class UnsafeCheckpointError(CheckpointError):
    """The file needs full unpickling (arbitrary code); refused unless the caller trusts it."""


CHECKPOINT_FORMATS = 'a torch.save file (zip or pickle) or a .safetensors file'
_TORCH_ZIP_MAGIC = b'PK\x03\x04'
_PICKLE_MAGIC = b'\x80'     # pickle protocol >= 2: legacy torch.save and plain pickles
_CORRUPT_ERRORS = (RuntimeError, EOFError, OSError, KeyError, IndexError, ValueError, TypeError)
"""What torch.load raises on a truncated or corrupt torch file (after its header was recognised)."""


def read_checkpoint(path: str | os.PathLike, *, trust: bool = False) -> Any:
    """Load a `.safetensors` or torch file without executing code; returns its top-level dict.

    `.pth` files are always read with `torch.load(weights_only=True)`. A file that needs more (pickled
    classes, e.g. an mmengine Runner checkpoint with its message hub) is refused with
    `UnsafeCheckpointError` unless `trust=True` — only for files you made yourself. A missing file, a
    directory, a file that is no checkpoint (text, say), a truncated or corrupt one and one that holds
    no dict raise `CheckpointError` (or FileNotFoundError) naming the file.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidArgumentError(f'read_checkpoint: path={type(path).__name__} is not accepted; accepted: '
                                   'a file path (str or os.PathLike); for a loaded object use convert_checkpoint')
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f'read_checkpoint: path={path!r} does not exist')
    if os.path.isdir(path):
        raise CheckpointError(f'read_checkpoint: path={path!r} is a directory; accepted: {CHECKPOINT_FORMATS}')
    with open(path, 'rb') as f:
        head = f.read(16)
    if _looks_like_safetensors(path, head):
        obj = _read_safetensors(path)
    elif head.startswith((_TORCH_ZIP_MAGIC, _PICKLE_MAGIC)):
        obj = _read_torch(path, trust)
    else:
        text = head and all(32 <= b < 127 or b in b'\t\r\n' for b in head)
        raise CheckpointError(f'read_checkpoint: {path} is not a checkpoint: it starts with {head[:12]!r}'
                              f'{" (text)" if text else ""}; accepted: {CHECKPOINT_FORMATS}')
    if not isinstance(obj, Mapping):
        raise CheckpointError(f'read_checkpoint: {path} holds a {type(obj).__name__}, not a checkpoint; accepted: '
                              f'a dict of tensors, or a dict with one of {CONTAINER_KEYS} holding them')
    return obj


def _looks_like_safetensors(path: str, head: bytes) -> bool:
    """safetensors: an 8-byte little-endian header length, then the JSON header."""
    return path.endswith('.safetensors') or (len(head) > 8 and head[8:9] == b'{'
                                               and 0 < int.from_bytes(head[:8], 'little') < 1 << 30)


def _read_safetensors(path: str) -> dict:
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError:
        raise CheckpointError(f'read_checkpoint: {path} is a .safetensors file; pip install safetensors '
                              'to read it') from None
    try:
        return load_file(path, device='cpu')
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f'read_checkpoint: {path} is not a readable .safetensors file (truncated or '
                              f'corrupt?): {err}') from None


def _read_torch(path: str, trust: bool) -> Any:
    """weights_only first; full unpickling only with `trust` and only when weights_only cannot read it."""
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        if not trust:
            raise UnsafeCheckpointError(
                f'read_checkpoint: {path} cannot be read as plain tensors: it needs full unpickling, which can '
                'run arbitrary code, or it is corrupt; refused (nothing in it was run). If you made this file '
                'yourself, pass trust=True (CLI: --trust), or strip it to tensors with `backbones publish`. '
                f'torch said: {_first_line(err)}') from None
    except _CORRUPT_ERRORS as err:
        raise _corrupt(path, err) from None
    logger.warning('loading %s with full unpickling (trusted by the caller)', path)
    try:
        return torch.load(path, map_location='cpu', weights_only=False)
    except (pickle.UnpicklingError, *_CORRUPT_ERRORS) as err:
        raise _corrupt(path, err) from None


def _corrupt(path: str, err: BaseException) -> CheckpointError:
    return CheckpointError(f'read_checkpoint: {path} is not a readable checkpoint (truncated or corrupt?): '
                           f'{type(err).__name__}: {_first_line(err)}')


def _first_line(err: BaseException) -> str:
    """The informative line of an error: torch's weights-only error puts it after 'WeightsUnpickler error:'."""
    text = str(err)
    if 'WeightsUnpickler error:' in text:
        text = text.split('WeightsUnpickler error:', 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:200] if lines else type(err).__name__


def unwrap_state_dict(obj: Any, prefix: Optional[str] = None) -> dict[str, torch.Tensor]:
    """Container → flat tensor state dict.

    Accepts a raw state dict, `{'state_dict': ...}`, `{'model': ...}` (nested too), with `module.`,
    `model.` or `_orig_mod.` wrappers. A full detector/segmentor/pose checkpoint is reduced to its
    `backbone.` entries. `prefix` forces a prefix to select and strip (OpenMMLab's `prefix=`).
    """
    seen = []
    while isinstance(obj, Mapping) and not _is_tensor_dict(obj):
        key = next((k for k in CONTAINER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if key is None:
            raise CheckpointError(f'no state dict found: top-level keys {sorted(obj)[:12]}; expected tensors '
                                  f'or one of {CONTAINER_KEYS}')
        seen.append(key)
        obj = obj[key]
    if not isinstance(obj, Mapping):
        hint = ' (a path? read it with backbones.read_checkpoint first)' if isinstance(obj, (str, os.PathLike)) else ''
        raise CheckpointError(f'expected a checkpoint: a dict of tensors or a dict with one of {CONTAINER_KEYS} '
                              f'holding them; got a {type(obj).__name__}{hint}')
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    for wrapper in WRAPPER_PREFIXES:
        if sd and all(k.startswith(wrapper) for k in sd):
            sd = {k[len(wrapper):]: v for k, v in sd.items()}
    if prefix:
        prefix = prefix if prefix.endswith('.') else prefix + '.'
        selected = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if not selected:
            raise CheckpointError(f'no key starts with prefix {prefix!r}; first keys: {list(sd)[:5]}')
        return selected
    if any(k.startswith(BACKBONE_PREFIX) for k in sd):
        sd = {k[len(BACKBONE_PREFIX):]: v for k, v in sd.items() if k.startswith(BACKBONE_PREFIX)}
    return sd


def _is_tensor_dict(obj: Mapping) -> bool:
    return len(obj) > 0 and sum(isinstance(v, torch.Tensor) for v in obj.values()) >= len(obj) / 2


def convert_checkpoint(obj: Any, family: str, prefix: Optional[str] = None) -> dict[str, torch.Tensor]:
    """Any supported checkpoint object of `family` → a state dict in our layout (layout auto-detected)."""
    if family not in CONVERTERS:
        raise InvalidArgumentError(f'convert_checkpoint: family={family!r} is not accepted; accepted: one of '
                                   f'{sorted(CONVERTERS)}')
    return CONVERTERS[family](unwrap_state_dict(obj, prefix))


@dataclasses.dataclass
class LoadReport:
    """What `load_pretrained` did, tensor by tensor."""
    source: str
    loaded: int
    expected: int
    adapted: list[str]
    ignored: list[str]
    missing_optional: list[str]

    def __str__(self) -> str:
        parts = [f'loaded {self.loaded}/{self.expected} backbone tensors from {self.source}']
        if self.adapted:
            parts.append(f'adapted {len(self.adapted)} ({_abbrev(self.adapted)})')
        if self.ignored:
            parts.append(f'ignored {len(self.ignored)} checkpoint keys ({_abbrev(self.ignored)})')
        if self.missing_optional:
            parts.append(f'kept init for {len(self.missing_optional)} optional keys '
                         f'({_abbrev(self.missing_optional)})')
        return '; '.join(parts)


def _abbrev(keys: list[str], n: int = 4) -> str:
    return ', '.join(keys[:n]) + (f', … (+{len(keys) - n})' if len(keys) > n else '')


def load_pretrained(model: nn.Module, source: Any, *, prefix: Optional[str] = None,
                    trust: bool = False) -> LoadReport:
    """Convert, adapt and strictly load `source` into `model`; log and return a `LoadReport`.

    `source`: a zoo name (see `backbones.list_checkpoints()`), an http(s) URL, a file path, or an
    already loaded checkpoint object / state dict. Errors name the offending keys: unexpected backbone
    keys, missing keys that are not declared optional, and shape mismatches.
    """
    family = getattr(model, 'FAMILY', '')
    if not isinstance(model, nn.Module) or family not in CONVERTERS:
        raise InvalidArgumentError(f'load_pretrained: model={type(model).__name__} is not accepted; accepted: a '
                                   f'backbone of this package (one of the families {sorted(CONVERTERS)})')
    if not isinstance(source, (str, os.PathLike, Mapping)):
        raise InvalidArgumentError(f'load_pretrained: source={type(source).__name__} is not accepted; accepted: a '
                                   'zoo checkpoint name, a path, an http(s) URL or a loaded checkpoint dict')
    label = source if isinstance(source, (str, os.PathLike)) else type(source).__name__
    if isinstance(source, (str, os.PathLike)):
        from .hub import resolve_checkpoint
        path = resolve_checkpoint(os.fspath(source))
        obj = read_checkpoint(path, trust=trust)
    else:
        obj = source
    state = convert_checkpoint(obj, family, prefix)
    state, adapted = model.adapt_state_dict(state)
    own = model.state_dict()
    ignored = [k for k in state if k not in own and model.is_ignorable_checkpoint_key(k)]
    unexpected = [k for k in state if k not in own and k not in ignored]
    missing = [k for k in own if k not in state]
    missing_required = [k for k in missing if not model.is_optional_model_key(k)]
    mismatched = [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}'
                  for k in own if k in state and state[k].shape != own[k].shape]
    # what copy_ would fail on (meta) or turn into garbage (integers into float weights), found before any copy
    mismatched += [f'{k}: checkpoint {state[k].dtype} on {state[k].device} vs model {own[k].dtype}'
                   for k in own if k in state and (state[k].is_meta and not own[k].is_meta
                                                   or own[k].is_floating_point() and not state[k].is_floating_point())]
    problems = []
    if unexpected:
        problems.append(f'{len(unexpected)} unexpected keys: {unexpected[:20]}')
    if missing_required:
        problems.append(f'{len(missing_required)} missing keys: {missing_required[:20]}')
    if mismatched:
        problems.append(f'{len(mismatched)} incompatible tensors (shape, dtype or device): {mismatched[:20]}')
    if problems:
        raise CheckpointError(f'cannot load {label} into {type(model).__name__}: ' + '; '.join(problems)
                              + '. Is the arch right for this checkpoint?')
    to_load = {k: v for k, v in state.items() if k in own}
    model.load_state_dict(to_load, strict=False)
    report = LoadReport(source=str(label), loaded=len(to_load), expected=len(own), adapted=adapted,
                        ignored=ignored, missing_optional=missing)
    logger.info('%s', report)
    return report


def strip_training_state(obj: Mapping) -> dict:
    """mmengine Runner checkpoint → `{'state_dict': tensors, 'meta': plain}` (loads with weights_only)."""
    sd = obj.get('state_dict', obj)
    meta = obj.get('meta', {}) if isinstance(obj.get('meta'), Mapping) else {}
    plain_meta = {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool, type(None)))}
    return {'state_dict': {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}, 'meta': plain_meta}


def key_pattern(key: str) -> str:
    """Key with digits replaced by `*` (for summaries of many similar keys)."""
    return re.sub(r'\d+', '*', key)
