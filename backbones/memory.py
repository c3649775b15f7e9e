"""Peak-memory model of a backbone's inference: what is live, where the peak is, and how it compares
with a measurement.

The model runs the REAL forward (the family code with its CPU fast paths: fused oneDNN kernels,
in-place GELU and residuals) on fake CPU tensors (`FakeTensorMode`: shapes, dtypes and aliasing, no
data, no compute) under a dispatch mode that acts as a simulated allocator: every operator output that
owns a new storage is an allocation of its `nbytes`, a storage is freed when its last tensor dies (weak
references, swept before the next operator), views and in-place results allocate nothing; composite
operators (matmul, contiguous, linear, ...) are traced through the operators they run (their C++
decompositions, as in eager). Fake views and convolution outputs get eager's strides (they differ on
dimensions of size one, and decide oneDNN's path). An uninitialised buffer (`empty`) is resident as it
is written, not when allocated (lean inference fills its outputs band by band). The running
sum of live bytes gives the activation peak; a module stack (each module's `forward` wrapped, no hooks,
so the fast paths take the branches they take in a plain run) says where it occurs.

The allocator is part of the model. The measurement (`backbones.benchmark`: a fresh subprocess, peak
RSS above the built model and input, steady state after warm-up from a trimmed heap) runs glibc with
its mmap threshold fixed at 64 KiB (`MALLOC_MMAP_THRESHOLD_`), so an activation block is resident
exactly while alive; `predicted_peak_bytes` models that (plus the transient scratch of oneDNN kernels,
`kernel_scratch`). With glibc's default dynamic threshold, freed blocks stay in the heap and a call's
peak depends on the heap's history (±30 % between runs of the same configuration here); a best-fit
heap model gives `predicted_peak_default_bytes` for it, `--default-allocator` measures it.

Weights, buffers and the input are not activations: the measurement excludes them the same way. The
total peak of a deployment is `weight_bytes + input_bytes + predicted_peak_bytes`.

    backbones memory twins-pcpvt-small --size 512x512 [--batch 1] [--lean] [--lowrank 0.5] [--json out.json]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

import torch
from torch import nn
from torch._prims_common import suggest_memory_format
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

# Operators whose real CPU kernel returns its input itself in inference (fake tensors would allocate).
_IDENTITY_IN_EVAL = {torch.ops.aten.dropout.default, torch.ops.aten.feature_dropout.default,
                     torch.ops.aten.alpha_dropout.default, torch.ops.aten.feature_alpha_dropout.default}

# Operators returning uninitialised memory: a fresh mapping of theirs becomes resident page by page as it
# is written (lean inference fills such buffers band by band), not when allocated.
_UNINITIALISED = {torch.ops.aten.empty.memory_format, torch.ops.aten.empty_strided.default,
                  torch.ops.aten.new_empty.default, torch.ops.aten.new_empty_strided.default,
                  torch.ops.aten.empty_like.default}

_VIEWS = {torch.ops.aten.view.default, torch.ops.aten._unsafe_view.default}


def _eager_view_strides(func, args: tuple, out: Any) -> Any:
    """A fake `view` with the strides eager gives it. They differ only on dimensions of size one, which
    address nothing, but decide layouts: (1, L, C) tokens viewed as (1, C, H, W) have batch stride C in
    eager, C·H·W in fake mode, and oneDNN runs the first as NCHW after a copy (a channels-last view whose
    batch stride is not the largest), the second as channels-last. The eager strides come from the same
    view of a meta tensor outside fake mode (the C++ kernel)."""
    from torch._subclasses.fake_tensor import FakeTensor, unset_fake_temporarily
    if not isinstance(out, FakeTensor) or 1 not in out.shape:
        return out
    src = args[0]
    with unset_fake_temporarily():
        ref = func(torch.empty_strided(src.shape, src.stride(), dtype=src.dtype, device='meta'), *args[1:])
    if ref.stride() == out.stride():
        return out
    return out.as_strided(out.shape, ref.stride(), out.storage_offset())


_CONVOLUTIONS = ('aten.conv2d.default', 'aten.convolution.default', 'mkldnn._convolution_pointwise.default')


def _eager_convolution_layout(args: tuple, out: Any) -> Any:
    """A fake convolution output in eager's memory format: channels-last when torch's stride test
    (`suggest_memory_format`) calls the input or the weight channels-last, else NCHW (the fake kernel of
    the fused oneDNN convolution asks `is_contiguous(channels_last)`, true also for a channels-last view
    of a batch of one with an odd batch stride, which eager runs as NCHW)."""
    from torch._subclasses.fake_tensor import FakeTensor, unset_fake_temporarily
    if not isinstance(out, FakeTensor) or out.dim() != 4:
        return out
    channels_last = torch.channels_last in (suggest_memory_format(args[0]), suggest_memory_format(args[1]))
    layout = torch.channels_last if channels_last else torch.contiguous_format
    if out.is_contiguous(memory_format=layout):
        return out
    with unset_fake_temporarily():
        stride = torch.empty(out.shape, device='meta', memory_format=layout).stride()
    return out.as_strided(out.shape, stride, out.storage_offset())


# glibc malloc (the CPU allocator under torch): requests of at least the mmap threshold get their own
# mapping, resident only while alive; smaller ones come from the heap, whose resident size does not
# shrink during a forward (the top is trimmed only beyond twice the threshold). The threshold starts
# at 128 KiB and rises to the size of each mapped block freed, up to DEFAULT_MMAP_THRESHOLD_MAX.
MMAP_THRESHOLD_MAX = 32 << 20
PAGE = 4096
# The measurement's allocator: glibc with the mmap threshold fixed (MALLOC_MMAP_THRESHOLD_) at 64 KiB,
# so every activation-sized block is mapped while alive and returned when freed: resident memory then
# follows what is live, the same for every call. With the default dynamic threshold the heap keeps
# freed blocks, and the peak of a call varies with the heap's history (the 'default' figures).
FIXED_MMAP_THRESHOLD = 64 << 10


def kernel_scratch(func, args: tuple, out: Any) -> int:
    """Bytes a CPU kernel allocates and frees inside one call (not visible as tensors), as measured
    for torch's oneDNN kernels (per-op RSS probes, benchmarks/memory_model.md):

    * convolution: oneDNN reorders the weight into its blocked layout on every call (1x the weight).
      On plain (NCHW) activations it also reorders the input and then the output into blocked layouts,
      one at a time (the larger counts), whose channels are padded to the block (16 with AVX-512, 8
      otherwise: an 18-channel map takes 32/18 of its size; maps of fewer channels than a block, such
      as an RGB input, are read as they are). On channels-last activations the activations are used as they
      are, but torch first copies the weight to the input's memory format, a second full copy unless the
      weight is already channels-last contiguous (1x1 and depth-wise kernels are); both weight copies
      are live together. Which path runs is torch's own test (`suggest_memory_format` of the input: the
      stride order, so a channels-last view whose batch stride is not the largest takes the plain path
      after a copy of the input to NCHW). Measured on channels-last inputs: 2x weight within -0.35 MiB
      (0 ... -10 %) for dense 2x2 / 3x3 / 4x4 / 8x8 kernels, 1x for 1x1 and depth-wise ones; the rule
      over-counts by at most 0.35 MiB and under-counted no probed shape by more than 0.2 MiB.
    * layer_norm copies a non-contiguous input.
    * Linear layers: oneDNN / GEMM packing buffers of 0.05-0.5 MiB, not modelled (see the bound in
      benchmarks/memory_model.md)."""
    name = str(func)
    if name in _CONVOLUTIONS:
        x, weight = args[0], args[1]
        blocked_weight = _nbytes(weight)
        if suggest_memory_format(x) == torch.channels_last:
            weight_copy = 0 if weight.is_contiguous(memory_format=torch.channels_last) else _nbytes(weight)
            return blocked_weight + weight_copy
        # plain path; an input that is neither (e.g. a channels-last view of a batch of one whose batch
        # stride is not the canonical one, which torch's stride test does not call channels-last) is
        # first copied to NCHW, live through the call
        copy = 0 if x.is_contiguous() else _nbytes(x)
        return copy + max(_channel_blocked(x), _channel_blocked(out)) + blocked_weight
    if name in ('aten.layer_norm.default', 'aten.native_layer_norm.default') and not args[0].is_contiguous():
        return _nbytes(args[0])
    return 0


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _channel_block() -> int:
    """Channels per block of oneDNN's blocked activation layout (nChw16c with AVX-512, else nChw8c)."""
    return 16 if torch.backends.cpu.get_cpu_capability().startswith('AVX512') else 8


def _channel_blocked(t: torch.Tensor) -> int:
    """Bytes of an (N, C, ...) activation reordered into the blocked layout: C padded to the block."""
    block = _channel_block()
    if t.dim() < 3 or t.shape[1] < block:     # fewer channels than a block (an RGB stem): read as it is
        return _nbytes(t)
    return _nbytes(t) // t.shape[1] * (-(-t.shape[1] // block) * block)


@dataclass
class ModuleMemory:
    """One module's share of a traced forward: tensor bytes live (activations only)."""
    name: str
    weight_bytes: int            # its parameters and buffers
    live_in: int = 0             # live when it starts
    peak: int = 0                # most live while it runs
    live_out: int = 0            # live when it returns (its output included)


class AllocationTracer(TorchDispatchMode):
    """Dispatch mode recording allocation events: the storages operators create (with their sizes and
    the module running), the storages freed, and each kernel's transient scratch."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.stack: list[str] = []
        # ('alloc', key, bytes, module, op) | ('free', key) | ('scratch', bytes, module, op) | ('enter'|'exit', module)
        # | ('lazy', key): the next alloc of key is uninitialised | ('touch', key, bytes, module, op): written
        self.events: list[tuple] = []
        self.unwritten: dict[int, int] = {}   # uninitialised storages: bytes not written yet
        self.order: list[str] = []        # modules in order of first call
        self.module_weights: dict[str, int] = {}

    def sweep(self) -> None:
        """Free the storages whose last tensor died."""
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            del self.live[key]
            self.unwritten.pop(key, None)
            self.events.append(('free', key))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.sweep()
        if func in _IDENTITY_IN_EVAL and not (args[2] if len(args) > 2 else kwargs.get('train', True)):
            return args[0]
        if func is torch.ops.aten.lift_fresh.default:   # a constant made in forward: fake mode only sees it
            return func(*args, **kwargs)
        if func.namespace == 'aten' and torch._C._dispatch_has_kernel_for_dispatch_key(
                func.name(), 'CompositeImplicitAutograd'):
            # composite (matmul, contiguous, interpolate, ...): trace the operators it runs, through its
            # C++ decomposition, the one eager runs; not `decompose()`, which prefers torch._decomp's
            # Python version where there is one (upsample_bilinear2d: eight full-size temporaries where
            # the eager kernel makes one output)
            with self:
                return func._op_dk(torch._C.DispatchKey.CompositeImplicitAutograd, *args, **kwargs)
        inputs = {StorageWeakRef(a.untyped_storage()).cdata for a in tree_leaves((args, kwargs))
                  if isinstance(a, torch.Tensor)}
        out = func(*args, **kwargs)
        if func in _VIEWS:
            out = _eager_view_strides(func, args, out)
        elif str(func) in _CONVOLUTIONS:
            out = _eager_convolution_layout(args, out)
        where = self.stack[-1] if self.stack else ''
        for o in tree_leaves(out):
            if not isinstance(o, torch.Tensor):
                continue
            storage = o.untyped_storage()
            ref = StorageWeakRef(storage)
            if ref.cdata in inputs or ref.cdata in self.live:
                continue
            self.live[ref.cdata] = (ref, storage.nbytes())
            if func in _UNINITIALISED:
                self.unwritten[ref.cdata] = storage.nbytes()
                self.events.append(('lazy', ref.cdata))
            self.events.append(('alloc', ref.cdata, storage.nbytes(), where, str(func)))
        if self.unwritten:
            self._note_writes(func, args, kwargs, where)
        scratch = kernel_scratch(func, args, out)
        if scratch:
            self.events.append(('scratch', scratch, where, str(func)))
        return out

    def _note_writes(self, func, args: tuple, kwargs: dict, where: str) -> None:
        """'touch' events for the uninitialised storages that `func` writes into (its mutated arguments:
        in-place self, out=): the bytes of the written view, at most what is still unwritten."""
        for i, arg in enumerate(func._schema.arguments):
            if arg.alias_info is None or not arg.alias_info.is_write:
                continue
            value = args[i] if i < len(args) and not arg.kwarg_only else kwargs.get(arg.name)
            for t in tree_leaves(value):
                if not isinstance(t, torch.Tensor):
                    continue
                key = StorageWeakRef(t.untyped_storage()).cdata
                left = self.unwritten.get(key)
                if left:
                    n = min(left, _nbytes(t))
                    self.unwritten[key] = left - n
                    self.events.append(('touch', key, n, where, str(func)))

    # module attribution ---------------------------------------------------------------------------
    def enter(self, name: str, module: nn.Module) -> None:
        self.sweep()
        if name not in self.module_weights:
            self.module_weights[name] = _state_bytes(module)
            self.order.append(name)
        self.events.append(('enter', name))
        self.stack.append(name)

    def exit(self) -> None:
        self.sweep()
        self.events.append(('exit', self.stack.pop()))


@dataclass
class Simulation:
    """Replay of a trace through the two-pool allocator model (bytes)."""
    live_peak: int                     # most tensor bytes live at once
    peak: int                          # predicted resident peak: heap high-water + live mapped blocks
    peak_module: str
    peak_op: str
    mmap_threshold: int
    modules: dict[str, ModuleMemory]


def _chunk(nbytes: int) -> int:
    """Heap bytes a request occupies: malloc's 16-byte header, 64-byte aligned (torch's CPU alignment)."""
    return -(-(nbytes + 16) // 64) * 64


def _pages(nbytes: int) -> int:
    return -(-(nbytes + 16) // PAGE) * PAGE


class HeapModel:
    """Best-fit heap with coalescing of neighbouring free chunks, growing at the top (glibc serves large
    requests best-fit from its sorted bins and from the top chunk otherwise); a free top beyond
    `trim_above` is returned to the system. `top` is its resident extent."""

    def __init__(self, trim_above: int):
        self.free: list[list[int]] = []          # [start, size], sorted by start
        self.top = 0
        self.trim_above = trim_above
        self.used: dict[int, tuple[int, int]] = {}

    def alloc(self, key: int, size: int) -> None:
        best = None
        for i, (start, length) in enumerate(self.free):
            if length >= size and (best is None or length < self.free[best][1]):
                best = i
        if best is None:
            if self.free and self.free[-1][0] + self.free[-1][1] == self.top:   # extend the top free chunk
                start = self.free.pop()[0]
            else:
                start = self.top
            self.top = start + size
        else:
            start, length = self.free[best]
            if length == size:
                self.free.pop(best)
            else:
                self.free[best] = [start + size, length - size]
        self.used[key] = (start, size)

    def release(self, key: int) -> None:
        start, size = self.used.pop(key)
        i = 0
        while i < len(self.free) and self.free[i][0] < start:
            i += 1
        self.free.insert(i, [start, size])
        if i + 1 < len(self.free) and start + size == self.free[i + 1][0]:      # merge with the next
            self.free[i][1] += self.free.pop(i + 1)[1]
        if i > 0 and self.free[i - 1][0] + self.free[i - 1][1] == start:       # and the previous
            self.free[i - 1][1] += self.free.pop(i)[1]
            i -= 1
        last = self.free[-1]
        if last[0] + last[1] == self.top and last[1] > self.trim_above:
            self.top = last[0]
            self.free.pop()


def simulate(tracer: 'AllocationTracer', weights: dict[str, int], mmap_threshold: Optional[int] = None) -> Simulation:
    """Replay `tracer.events`: tensor-level live bytes per module, and the resident peak predicted by the
    glibc model (steady state: the mmap threshold has risen to the largest block under its maximum)."""
    sizes = [e[2] for e in tracer.events if e[0] == 'alloc'] + [e[1] for e in tracer.events if e[0] == 'scratch']
    below = [n for n in sizes if n < MMAP_THRESHOLD_MAX]
    threshold = mmap_threshold or (max(below) if below else MMAP_THRESHOLD_MAX)
    mapped = lambda n: n >= threshold   # noqa: E731
    heap = HeapModel(trim_above=2 * threshold)
    scratch_heap = HeapModel(trim_above=2 * threshold)   # oneDNN's buffers: another arena (worker threads)
    sizes_of: dict[int, int] = {}
    lazy: set[int] = set()               # the next alloc of these keys is uninitialised
    written: dict[int, int] = {}         # mapped uninitialised blocks: bytes written so far
    live = maps = live_peak = 0
    best = (0, '', '')
    modules: dict[str, ModuleMemory] = {}
    stack: list[str] = []

    def note(where: str, op: str, extra: int = 0) -> None:
        nonlocal best, live_peak
        live_peak = max(live_peak, live)
        for name in stack:
            modules[name].peak = max(modules[name].peak, live)
        resident = heap.top + scratch_heap.top + maps + extra
        if resident > best[0]:
            best = (resident, where, op)

    for event in tracer.events:
        kind = event[0]
        if kind == 'alloc':
            _, key, n, where, op = event
            sizes_of[key] = n
            live += n
            if mapped(n) and key in lazy:
                written[key] = 0          # resident as written ('touch'); now only malloc's header page
                maps += _pages(0)
            elif mapped(n):
                maps += _pages(n)
            else:
                heap.alloc(key, _chunk(n))
            lazy.discard(key)
            note(where, op)
        elif kind == 'lazy':
            lazy.add(event[1])
        elif kind == 'touch':
            _, key, n, where, op = event
            if key in written:
                size = _pages(sizes_of[key])
                before = min(size, _pages(written[key]))
                written[key] += n
                maps += min(size, _pages(written[key])) - before
                note(where, op)
        elif kind == 'free':
            n = sizes_of.pop(event[1], None)
            if n is None:
                continue
            live -= n
            if event[1] in written:
                maps -= min(_pages(n), _pages(written.pop(event[1])))
            elif mapped(n):
                maps -= _pages(n)
            else:
                heap.release(event[1])
        elif kind == 'scratch':
            _, n, where, op = event
            if mapped(n):
                note(where, op, _pages(n))
            else:
                scratch_heap.alloc(-1, _chunk(n))
                note(where, op)
                scratch_heap.release(-1)
        elif kind == 'enter':
            name = event[1]
            if name not in modules:
                modules[name] = ModuleMemory(name, weights.get(name, 0), live_in=live)
            modules[name].peak = max(modules[name].peak, live)
            stack.append(name)
        elif kind == 'exit':
            modules[stack.pop()].live_out = live
    return Simulation(live_peak=live_peak, peak=best[0], peak_module=best[1], peak_op=best[2],
                      mmap_threshold=threshold, modules=modules)


def _state_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


@contextlib.contextmanager
def _attributed(model: nn.Module, tracer: AllocationTracer):
    """Wrap every module's `forward` (instance attribute, no hooks) to keep `tracer.stack`."""
    saved = []
    for name, module in model.named_modules():
        previous = module.__dict__.get('forward')
        original = module.forward

        def forward(*args, _original=original, _name=name or '(model)', _module=module, **kwargs):
            tracer.enter(_name, _module)
            try:
                return _original(*args, **kwargs)
            finally:
                tracer.exit()
        module.forward = forward
        saved.append((module, previous))
    try:
        yield
    finally:
        for module, previous in saved:
            if previous is None:
                del module.__dict__['forward']
            else:
                module.forward = previous


def _fake_state(model: nn.Module, mode) -> dict[str, torch.Tensor]:
    """Every parameter and buffer as a fake tensor on the model's (real) device type, CPU for meta."""
    from torch._subclasses.fake_tensor import FakeTensor
    state = {}
    for name, t in list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers()):
        device = torch.device('cpu') if t.device.type == 'meta' else t.device
        state[name] = FakeTensor(mode, torch.empty_like(t, device='meta'), device)
    return state


def trace_forward(model: nn.Module, size: tuple[int, int], batch: int = 1, dtype: torch.dtype = torch.float32,
                  inputs: Optional[torch.Tensor] = None) -> AllocationTracer:
    """Trace `model(x)` in inference mode for x of (batch, 3, H, W) on fake CPU tensors (the model may
    live on meta); with real `inputs`, the real forward of the real model is traced instead."""
    tracer = AllocationTracer()
    was_training = model.training
    model.eval()
    try:
        if inputs is not None:
            with torch.inference_mode(), _attributed(model, tracer), tracer:
                out = model(inputs)
                del out
                tracer.sweep()
            return tracer
        from torch._subclasses.fake_tensor import FakeTensorMode
        mode = FakeTensorMode(allow_non_fake_inputs=False)
        state = _fake_state(model, mode)
        with mode:
            x = torch.empty(batch, 3, *size, dtype=dtype, device='cpu')
        with torch.inference_mode(), _attributed(model, tracer), mode, tracer:
            out = torch.func.functional_call(model, state, (x,))
            del out
            tracer.sweep()
    finally:
        model.train(was_training)
    return tracer


# ---------------------------------------------------------------------------------------------------
# reports
# ---------------------------------------------------------------------------------------------------
@dataclass
class MemoryReport:
    """Predicted (and, when measured, measured) inference memory of one configuration; bytes."""
    variant: str
    size: tuple[int, int]
    batch: int
    lean: bool
    lowrank: Any
    weight_bytes: int
    input_bytes: int
    predicted_peak_bytes: int                 # resident activation peak, fixed allocator (weights, input excluded)
    predicted_peak_default_bytes: int         # the same with glibc's default (dynamic) threshold: heap model
    live_peak_bytes: int                      # most tensor bytes live at once (no allocator effects)
    peak_module: str
    peak_op: str
    predicted_total_bytes: int                # weights + input + activation peak
    modules: list[dict] = field(default_factory=list)
    measured_peak_bytes: Optional[int] = None            # fixed allocator, as predicted_peak_bytes
    measured_peak_default_bytes: Optional[int] = None    # default glibc, as predicted_peak_default_bytes
    measured_peak_onnxruntime_bytes: Optional[int] = None   # the ONNX export in onnxruntime (arena off), fixed allocator
    measurement: Optional[dict] = None

    @property
    def error(self) -> Optional[float]:
        """(predicted − measured) / measured, when measured."""
        if not self.measured_peak_bytes:
            return None
        return (self.predicted_peak_bytes - self.measured_peak_bytes) / self.measured_peak_bytes


def parse_size(text: str | Sequence[int], argument: str = '--size') -> tuple[int, int]:
    """'512x512' / '512' / (512, 512) → (H, W); both ≥ 32 (what every backbone accepts)."""
    try:
        if isinstance(text, str):
            parts = text.lower().replace('×', 'x').split('x')
            h, w = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
            if len(parts) > 2:
                raise ValueError
        else:
            h, w = (int(v) for v in text)
    except (ValueError, TypeError):
        raise ValueError(f'{argument}: expected HxW such as 512x512, got {text!r}') from None
    if h < 32 or w < 32:
        raise ValueError(f'{argument}: height and width must be >= 32 (got {h}x{w})')
    return h, w


def model_kwargs(lean: bool = False, lowrank: Any = None) -> dict:
    """Constructor keywords for the mechanisms (only those asked for)."""
    kwargs: dict[str, Any] = {}
    if lean:
        kwargs['lean'] = True
    if lowrank is not None:
        kwargs['lowrank'] = lowrank
    return kwargs


def build_for_memory(variant: str, lean: bool = False, lowrank: Any = None, device: str = 'meta') -> nn.Module:
    """The variant as the benchmark builds it (drop-path 0), on `device` (meta: no weights allocated)."""
    from ._base import MECHANISMS
    from ._factory import _zoo
    zoo = _zoo()
    if variant not in zoo:
        raise KeyError(f'variant: unknown backbone {variant!r}; choose one of {sorted(zoo)}')
    kwargs = model_kwargs(lean, lowrank)
    missing = [k for k in kwargs if k not in MECHANISMS]
    if missing:
        raise ValueError(f'--{missing[0]}: the {missing[0]}= mechanism is not available in this build '
                         f'(available: {sorted(MECHANISMS)})')
    cls, arch = zoo[variant]
    with torch.device(device):
        return cls(arch=arch, drop_path_rate=0.0, **kwargs)


def report_of(model: nn.Module, variant: str, size: tuple[int, int], batch: int = 1, lean: bool = False,
              lowrank: Any = None) -> MemoryReport:
    """Trace `model` and summarise: stages and blocks, peak and where, weights."""
    tracer = trace_forward(model, size, batch)
    weights = {name or '(model)': _state_bytes(m) for name, m in model.named_modules()}
    sim = simulate(tracer, weights, FIXED_MMAP_THRESHOLD)
    default = simulate(tracer, weights)
    weight_bytes = _state_bytes(model)
    input_bytes = batch * 3 * size[0] * size[1] * 4
    rows = [asdict(m) for name, m in sim.modules.items() if _is_report_row(model, name)]
    return MemoryReport(variant=variant, size=tuple(size), batch=batch, lean=lean, lowrank=lowrank,
                        weight_bytes=weight_bytes, input_bytes=input_bytes, predicted_peak_bytes=sim.peak,
                        predicted_peak_default_bytes=default.peak, live_peak_bytes=sim.live_peak,
                        peak_module=sim.peak_module, peak_op=sim.peak_op,
                        predicted_total_bytes=weight_bytes + input_bytes + sim.peak, modules=rows)


def _is_report_row(model: nn.Module, name: str) -> bool:
    """Rows printed: the model's direct children and the blocks of its stages (children of a
    ModuleList / Sequential at most three levels down)."""
    if name == '(model)':
        return False
    parts = name.split('.')
    if len(parts) == 1:
        return True
    return parts[-1].isdigit() and len(parts) <= 4


def predict(variant: str, size: tuple[int, int] | str, batch: int = 1, lean: bool = False,
            lowrank: Any = None) -> MemoryReport:
    """The memory model of `variant` at `size` (no weights allocated: built on meta)."""
    size = parse_size(size)
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f'batch: expected a positive integer, got {batch!r}')
    model = build_for_memory(variant, lean, lowrank)
    return report_of(model, variant, size, batch, lean, lowrank)


def measure(variant: str, size: tuple[int, int], batch: int = 1, lean: bool = False, lowrank: Any = None,
            threads: int = 2, checkpoint: Optional[str] = None, allocator: str = 'fixed',
            runtime: str = 'torch') -> dict:
    """The benchmark's measurement of the same configuration (fresh subprocess, peak RSS above the built
    model and input, steady state: after warm-up, from a trimmed heap) with the `allocator` 'fixed'
    (FIXED_MMAP_THRESHOLD) or glibc's 'default'; the record, with `peak_bytes`."""
    from . import benchmark
    cfg = benchmark.Config(variant=variant, mode='infer', size=tuple(size), batch=batch, threads=threads,
                           warmup=2, repeats=1, model_kwargs=model_kwargs(lean, lowrank), checkpoint=checkpoint,
                           steady_peak=True, runtime=runtime,
                           malloc_mmap_threshold=FIXED_MMAP_THRESHOLD if allocator == 'fixed' else None)
    record = benchmark.measure(cfg)
    if 'error' in record:
        raise RuntimeError(f'measurement of {variant} failed: {record["error"]}')
    record['peak_bytes'] = int(record['peak_mem_mib'] * 2 ** 20)
    return record


def _mib(n: Optional[int]) -> str:
    return '-' if n is None else f'{n / 2 ** 20:.1f}'


def format_report(report: MemoryReport) -> str:
    lines = [f'{report.variant}  {report.size[0]}x{report.size[1]}  batch {report.batch}'
             f'{"  lean" if report.lean else ""}{f"  lowrank {report.lowrank}" if report.lowrank is not None else ""}',
             f'{"module":<34} {"weights MiB":>11} {"live in":>9} {"peak":>9} {"live out":>9}']
    for row in report.modules:
        lines.append(f'{row["name"]:<34} {_mib(row["weight_bytes"]):>11} {_mib(row["live_in"]):>9} '
                     f'{_mib(row["peak"]):>9} {_mib(row["live_out"]):>9}')
    lines += [f'weights + buffers: {_mib(report.weight_bytes)} MiB; input: {_mib(report.input_bytes)} MiB',
              f'live tensors at most: {_mib(report.live_peak_bytes)} MiB; predicted resident activation peak '
              f'(allocator model): {_mib(report.predicted_peak_bytes)} MiB in {report.peak_module} ({report.peak_op})',
              f'predicted total (weights + input + activations): {_mib(report.predicted_total_bytes)} MiB']
    lines.append(f'with glibc\'s default allocator (heap model): {_mib(report.predicted_peak_default_bytes)} MiB')
    if report.measured_peak_bytes is not None:
        lines.append(f'measured activation peak (fixed allocator, MALLOC_MMAP_THRESHOLD_={FIXED_MMAP_THRESHOLD}): '
                     f'{_mib(report.measured_peak_bytes)} MiB; prediction error {report.error:+.1%}')
    if report.measured_peak_default_bytes is not None:
        err = report.predicted_peak_default_bytes / report.measured_peak_default_bytes - 1
        lines.append(f'measured with the default allocator: {_mib(report.measured_peak_default_bytes)} MiB '
                     f'(heap-model error {err:+.1%}; varies with the heap\'s history)')
    if report.measured_peak_onnxruntime_bytes is not None:
        lines.append(f'onnxruntime (the ONNX export, dynamic H/W, CPU arena off; same measurement): '
                     f'{_mib(report.measured_peak_onnxruntime_bytes)} MiB')
    if report.measurement:
        lines.append(f'measurement: {report.measurement.get("memory_method", "")}, fresh process')
    return '\n'.join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('variant', help='zoo name, e.g. twins-pcpvt-small')
    parser.add_argument('--size', default='512x512', help='HxW, e.g. 512x512 or 800x1333')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--lean', action='store_true', help='lean inference (lean=True)')
    parser.add_argument('--lowrank', type=_ratios, help='rank ratio, or one per stage: 0.5 or 0.9,0.7,0.5,0.5')
    parser.add_argument('--threads', type=int, default=2, help='threads of the measuring process')
    parser.add_argument('--no-measure', action='store_true', help='prediction only')
    parser.add_argument('--default-allocator', action='store_true',
                        help="also measure with glibc's default (dynamic) mmap threshold")
    parser.add_argument('--onnx', action='store_true',
                        help='also export to ONNX (dynamic H/W) and measure onnxruntime\'s peak the same way')
    parser.add_argument('--json', help='write the report here')


def _ratios(text: str):
    try:
        values = [float(v) for v in text.split(',')]
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a ratio or comma-separated ratios, got {text!r}') from None
    return values[0] if len(values) == 1 else values


def cmd_memory(args: argparse.Namespace) -> int:
    try:
        size = parse_size(args.size)
        lowrank = None if args.lowrank is None else dict(ratio=args.lowrank)
        report = predict(args.variant, size, args.batch, args.lean, lowrank)
    except (KeyError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    if not args.no_measure:
        record = measure(args.variant, size, args.batch, args.lean, lowrank, args.threads)
        report.measured_peak_bytes = record['peak_bytes']
        if args.default_allocator:
            report.measured_peak_default_bytes = measure(args.variant, size, args.batch, args.lean, lowrank,
                                                         args.threads, allocator='default')['peak_bytes']
        report.measurement = {k: record[k] for k in ('memory_method', 'threads', 'median_ms', 'torch', 'host')}
    if args.onnx:
        ort = measure(args.variant, size, args.batch, args.lean, lowrank, args.threads, runtime='onnxruntime')
        report.measured_peak_onnxruntime_bytes = ort['peak_bytes']
        report.measurement = dict(report.measurement or {}, onnxruntime_median_ms=ort['median_ms'])
    print(format_report(report))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(asdict(report), error=report.error), f, indent=1)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='backbones memory', description=__doc__.split('\n\n')[0])
    add_arguments(parser)
    return cmd_memory(parser.parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
