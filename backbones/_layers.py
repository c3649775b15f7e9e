"""Building blocks shared by every family: drop-path, MLP, norms, layout helpers, checkpointing.

Everything here needs PyTorch only.
"""
from __future__ import annotations

import contextlib
import math
import os
import threading
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability `drop_prob` (training only)."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        scale = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep).div_(keep)
        return x * scale                        # one pass over x (x * mask / keep takes two, four with backward)

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob}'


def drop_path_or_identity(rate: float) -> nn.Module:
    """The official codes use nn.Identity when the rate is 0; so do we (no extra module in the graph)."""
    return DropPath(rate) if rate > 0 else nn.Identity()


def drop_path_schedule(rate: float, depths: Sequence[int]) -> list[list[float]]:
    """Linearly increasing drop-path rates over all blocks, split per stage.

    Matches `torch.linspace(0, rate, sum(depths))` of the official codes.
    """
    rates = torch.linspace(0, rate, sum(depths), device='cpu').tolist()  # also under a meta device context
    out, start = [], 0
    for d in depths:
        out.append(rates[start:start + d])
        start += d
    return out


class Mlp(nn.Module):
    """Linear → activation → dropout → Linear → dropout on (..., C) tensors; keys `fc1`, `fc2`."""

    def __init__(self, in_features: int, hidden_features: Optional[int] = None,
                 out_features: Optional[int] = None, act_layer: Callable[[], nn.Module] = nn.GELU,
                 drop: float = 0.0):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = self._chunk_rows(x)
        if rows:
            flat = x.reshape(-1, x.shape[-1])
            out = torch.cat([self._forward(chunk) for chunk in flat.split(rows)])
            return out.view(*x.shape[:-1], out.shape[-1])
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(linear(self.fc2, self.drop(linear(self.fc1, x, self.act))))

    def _chunk_rows(self, x: torch.Tensor) -> int:
        """Tokens per chunk on the CPU when the hidden activation would reach MLP_CHUNK_ABOVE bytes in
        training (MLP_INFER_CHUNK_ABOVE without gradients), else 0 (one pass). See MLP_CHUNK_BYTES."""
        tokens = x.numel() // max(x.shape[-1], 1)
        hidden_bytes = self.fc1.out_features * 4            # fp32 (autocast's bf16 halves it: still chunked)
        above, size = ((MLP_CHUNK_ABOVE, MLP_CHUNK_BYTES) if torch.is_grad_enabled()
                       else (MLP_INFER_CHUNK_ABOVE, MLP_INFER_CHUNK_BYTES))
        if tokens * hidden_bytes < above or x.device.type != 'cpu' or not plain_eager() or hooked(self):
            return 0
        return max(1, size // hidden_bytes)


# CPU: an Mlp whose hidden activation (tokens x hidden, fp32) would take >= MLP_CHUNK_ABOVE bytes in training
# runs over chunks of MLP_CHUNK_BYTES of hidden activation, then concatenates the outputs (same values; the
# weight gradients are sums over chunks, equal up to float rounding). glibc serves blocks >= 32 MiB by mmap
# and returns them on free, so every such activation and gradient is page-faulted in anew on every step
# (~1 ms per 4 MiB here: Twins-PCPVT-S stage 1, 2 x 16384 x 512 fp32 = 64 MiB, four of them per block per
# step); smaller blocks are recycled from the heap. Inference (no gradients) chunks from 16 MiB into 4 MiB:
# glibc trims the top of its heap once the free space there passes twice its (dynamic) mmap threshold, so a
# forward whose transient peak rises well above the steady heap faults its big blocks in anew on every call
# (S3-T 512² b1: ~15k page faults per forward, none with its stage-1 hidden activations in 4 MiB chunks;
# 372-377 → 355-360 ms, alternated in one process).
MLP_CHUNK_BYTES = 8 << 20
MLP_CHUNK_ABOVE = 32 << 20
MLP_INFER_CHUNK_BYTES = 4 << 20
MLP_INFER_CHUNK_ABOVE = 16 << 20


def plain_eager() -> bool:
    """Eager execution that nobody records: not under `torch.compile`, `torch.jit.trace` or ONNX export
    (these must see the plain operations, not the fast paths below)."""
    return not (torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())


def hooked(*modules: nn.Module) -> bool:
    """Whether a forward hook may see (and keep) an output of these modules or their submodules: the
    in-place and folded fast paths below then step aside, so hooks observe exactly the plain code path."""
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for module in modules for m in module.modules())


def activate(act: nn.Module, x: torch.Tensor, producer: nn.Module) -> torch.Tensor:
    """`act(x)` for `x` freshly computed by `producer`; exact GELU runs in place when no gradient is
    needed and no hook watches `producer` or `act`.

    Same values. On CPU a new activation-sized tensor (≥ 32 MB at dense sizes) is mmap-ed and
    page-faulted on every call; reusing `x` saved ~20 % of Twins-PCPVT-S inference at 512² (2 threads)."""
    if (isinstance(act, nn.GELU) and not (torch.is_grad_enabled() and x.requires_grad)
            and not hooked(producer, act)):
        return torch.ops.aten.gelu_(x, approximate=act.approximate)
    return act(x)


def add_residual(x: torch.Tensor, branch: torch.Tensor, producer: nn.Module) -> torch.Tensor:
    """`x + branch`. Without gradients the sum is written into `branch` (freshly computed by
    `producer`, e.g. a block's attention or MLP) when that changes nothing: same shape, same result
    dtype (under autocast a bf16 branch is not used, the residual stream stays fp32), and no hook
    watching `producer`. See `activate` for why."""
    if ((torch.is_grad_enabled() and (x.requires_grad or branch.requires_grad))
            or branch.shape != x.shape or branch.dtype != torch.result_type(x, branch) or hooked(producer)):
        return x + branch
    return branch.add_(x)


# Fused oneDNN inference kernels (CPU, fp32, no autograd): a linear or convolution with its bias and
# activation in one pass (`torch.ops.mkldnn._linear_pointwise` / `_convolution_pointwise`, the kernels
# that inductor emits). The plain aten linear first copies the bias into the output and the activation
# reads and writes the result again. `BACKBONES_FUSED_CPU=0` switches them off.
FUSED_CPU = os.environ.get('BACKBONES_FUSED_CPU', '1') != '0'
_FUSED_ACTS = {nn.GELU: 'gelu', nn.ReLU: 'relu'}


def _fused_attr(act: Optional[nn.Module]) -> Optional[tuple[str, str]]:
    """oneDNN post-op (attr, algorithm) for `act`, or None when it has none."""
    if act is None:
        return 'none', ''
    kind = _FUSED_ACTS.get(type(act))
    if kind == 'gelu':
        return kind, 'tanh' if act.approximate == 'tanh' else 'none'
    return (kind, '') if kind else None


def _fused_ok(x: torch.Tensor, *modules: Optional[nn.Module]) -> bool:
    """Whether the fused oneDNN kernels may run for `x`: fp32 CPU tensors without autograd, autocast,
    tracing, compilation or export (these see the plain ops), oneDNN enabled in torch.backends.mkldnn, and no
    hook watching `modules`."""
    return (FUSED_CPU and x.device.type == 'cpu' and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and torch.backends.mkldnn.is_available() and torch._C._get_mkldnn_enabled()
            and not torch.is_autocast_enabled('cpu')
            and plain_eager() and not hooked(*[m for m in modules if m is not None]))


def linear(fc: nn.Linear, x: torch.Tensor, act: Optional[nn.Module] = None) -> torch.Tensor:
    """`act(fc(x))` (`act` None: `fc(x)`); (..., C_in) → (..., C_out). Fused oneDNN kernel in fp32 CPU
    inference (`_fused_ok`), else the module calls (exact GELU in place without gradients)."""
    attr = _fused_attr(act)
    if attr is not None and type(fc) is nn.Linear and _fused_ok(x, fc, act):
        return torch.ops.mkldnn._linear_pointwise(x, fc.weight, fc.bias, attr[0], [], attr[1])
    y = fc(x)
    return y if act is None else activate(act, y, fc)


def _zero_padded(conv: nn.Conv2d) -> bool:
    """Numeric zero padding (no 'same'/'valid' string, no reflect/replicate/circular mode): what the direct
    convolution calls below take."""
    return conv.padding_mode == 'zeros' and not isinstance(conv.padding, str)


def _depthwise(conv: nn.Conv2d) -> bool:
    return conv.groups == conv.in_channels == conv.out_channels


def _fused_conv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], conv: nn.Conv2d,
                attr: tuple[str, str]) -> torch.Tensor:
    """oneDNN convolution with `conv`'s geometry, the given weight/bias and post-op `attr`."""
    return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, list(conv.padding), list(conv.stride),
                                                   list(conv.dilation), conv.groups, attr[0], [], attr[1])


def conv_act(x: torch.Tensor, conv: nn.Conv2d, act: nn.Module) -> torch.Tensor:
    """`act(conv(x))`, NCHW → NCHW (any memory format); one fused oneDNN kernel in fp32 CPU inference, a
    faster backward for large depth-wise kernels in CPU training (`depthwise_conv`)."""
    attr = _fused_attr(act)
    if attr is not None and type(conv) is nn.Conv2d and _zero_padded(conv) and _fused_ok(x, conv, act):
        return _fused_conv(x, conv.weight, conv.bias, conv, attr)
    return activate(act, depthwise_conv(x, conv) if _depthwise_train_ok(x, conv) else conv(x), conv)


# Depth-wise convolution backward on CPU. oneDNN's depth-wise backward-weight runs at a tenth of its
# forward speed or less for kernels >= 5 (FocalNet-T stage 2, 2x192x64x64, k=9: 30 ms against 1.9 ms
# forward), and its backward-data is ~3x the forward at k=5. Both gradients are correlations that a
# forward convolution computes at forward speed.
DEPTHWISE_STRIP_ROWS = 32      # output rows per strip in the weight gradient
DEPTHWISE_MIN_KERNEL = 5       # smaller kernels: oneDNN's own backward is fast


def _depthwise_weight_grad(x: torch.Tensor, grad: torch.Tensor, kernel: tuple[int, int],
                           padding: tuple[int, int]) -> torch.Tensor:
    """∂L/∂weight (C, 1, kh, kw) of the stride-1 depth-wise convolution of x (N, C, H, W) with output
    gradient `grad` (N, C, Ho, Wo), as ONE grouped forward convolution: for every (image, channel, strip
    of output rows) the strip of `grad` is the kernel and the input rows it saw (zero halo included) are
    the input, so the convolution's (kh, kw) output is that strip's share of the gradient; shares are then
    summed. Built from differentiable operations (double backward works)."""
    n, c, h, w = x.shape
    (kh, kw), (ph, pw) = kernel, padding
    ho, wo = grad.shape[-2:]
    rows_out = min(DEPTHWISE_STRIP_ROWS, ho)
    strips = -(-ho // rows_out)
    rows_in = rows_out + kh - 1
    tiles = x.new_zeros(n, c, strips, rows_in, w + 2 * pw)
    for s in range(strips):
        top = s * rows_out - ph                 # input row under the strip's first output row (< 0: padding)
        first, last = max(top, 0), min(top + rows_in, h)
        if first < last:
            tiles[:, :, s, first - top:last - top, pw:pw + w] = x[:, :, first:last]
    if strips * rows_out == ho:
        kernels = grad.contiguous()
    else:
        kernels = grad.new_zeros(n, c, strips * rows_out, wo)
        kernels[:, :, :ho] = grad
    groups = n * c * strips
    shares = F.conv2d(tiles.view(1, groups, rows_in, w + 2 * pw), kernels.view(groups, 1, rows_out, wo),
                      groups=groups)
    return shares.view(n, c, strips, kh, kw).sum((0, 2)).unsqueeze(1)


class _DepthwiseConv2d(torch.autograd.Function):
    """Stride-1 depth-wise `conv2d` whose backward runs as forward convolutions: ∂L/∂x is the output
    gradient correlated with the flipped kernel, ∂L/∂w comes from `_depthwise_weight_grad`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                padding: tuple[int, int]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        return F.conv2d(x, weight, bias, 1, padding, 1, x.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        (ph, pw), (kh, kw) = ctx.padding, weight.shape[-2:]
        want = ctx.needs_input_grad
        grad_x = grad_w = grad_b = None
        if want[0]:
            grad_x = F.conv2d(grad, weight.flip((-2, -1)), None, 1, (kh - 1 - ph, kw - 1 - pw), 1, x.shape[1])
        if want[1]:
            grad_w = _depthwise_weight_grad(x, grad, (kh, kw), (ph, pw))
        if want[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None


def _depthwise_train_ok(x: torch.Tensor, conv: nn.Module) -> bool:
    """Whether `depthwise_conv` replaces `conv(x)`: CPU float32/64 training (no autocast, compilation,
    tracing or export), a plain stride-1 depth-wise Conv2d with a kernel >= DEPTHWISE_MIN_KERNEL, zero
    padding below the kernel size, and no hook watching it."""
    if type(conv) is not nn.Conv2d or not torch.is_grad_enabled():
        return False
    kh, kw = conv.kernel_size
    return (_depthwise(conv) and min(kh, kw) >= DEPTHWISE_MIN_KERNEL and conv.stride == (1, 1)
            and conv.dilation == (1, 1) and _zero_padded(conv) and conv.padding[0] < kh and conv.padding[1] < kw
            and (x.requires_grad or conv.weight.requires_grad) and x.device.type == 'cpu'
            and x.dtype in (torch.float32, torch.float64) and conv.weight.dtype == x.dtype
            and not torch.is_autocast_enabled('cpu') and plain_eager() and not hooked(conv))


def depthwise_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """`conv(x)` for a stride-1 depth-wise Conv2d with the backward of `_DepthwiseConv2d`; same values."""
    return _DepthwiseConv2d.apply(x, conv.weight, conv.bias, tuple(conv.padding))


def nlc_to_nchw(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(N, H*W, C) row-major tokens → (N, C, H, W)."""
    n, _, c = x.shape
    return x.transpose(1, 2).reshape(n, c, hw[0], hw[1])


def nchw_to_nlc(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) → (N, H*W, C) row-major tokens."""
    return x.flatten(2).transpose(1, 2)


def pad_to_multiple(x: torch.Tensor, multiple: int | tuple[int, int]) -> torch.Tensor:
    """Zero-pad an NCHW tensor on the right/bottom so H and W become multiples of `multiple`."""
    mh, mw = (multiple, multiple) if isinstance(multiple, int) else multiple
    h, w = x.shape[-2:]
    ph, pw = (-h) % mh, (-w) % mw
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
    return x


BN_TYPES = ('BN', 'BN2d', 'BatchNorm', 'BatchNorm2d')
SYNC_BN_TYPES = ('SyncBN', 'SyncBatchNorm')
NORM2D_TYPES = BN_TYPES + SYNC_BN_TYPES
"""`norm_cfg['type']` values `build_norm2d` accepts."""


class PatchEmbed(nn.Module):
    """Strided conv + optional LayerNorm, (N, C_in, H, W) → (N, ceil(H/s), ceil(W/s), C_out).

    The input is zero-padded right/bottom to a multiple of `patch_size` first (FocalNet's official dense
    code, mmdet's Swin). Non-overlapping: kernel = stride = `patch_size` (FocalNet, S3). Overlapping
    (FocalNet `use_conv_embed`): the stem is 7×7 stride 4 with padding `stem_conv_padding`, a downsample
    3×3 stride 2 padding 1.
    """

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, use_conv_embed: bool = False,
                 is_stem: bool = True, with_norm: bool = True, stem_conv_padding: int = 3):
        super().__init__()
        self.patch_size = patch_size
        if use_conv_embed and is_stem:
            self.proj = nn.Conv2d(in_chans, embed_dim, 7, stride=4, padding=stem_conv_padding)
        elif use_conv_embed:
            self.proj = nn.Conv2d(in_chans, embed_dim, 3, stride=2, padding=1)
        else:
            self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if with_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(channels_last_on_cpu(pad_to_multiple(x, self.patch_size))).permute(0, 2, 3, 1)
        return self.norm(x) if self.norm is not None else x.contiguous()


def channels_last_on_cpu(x: torch.Tensor) -> torch.Tensor:
    """An image batch (N, C, H, W) in channels-last memory for a CPU patch-embedding conv (eager): its
    output is then (N, H, W, C) in memory, so the tokens that follow are a free view instead of a
    transposing copy, and its backward gets that layout too (S3-T stem at 512² b2, forward + backward:
    ~17 instead of ~50 ms here). Same values; traced / exported graphs see the plain conv."""
    if x.device.type != 'cpu' or x.dim() != 4 or not plain_eager():
        return x
    return x.contiguous(memory_format=torch.channels_last)


def init_linear_or_layernorm(module: nn.Module) -> bool:
    """The ViT/Swin-style official init most families share: Linear trunc_normal(std .02) / bias 0,
    LayerNorm weight 1 / bias 0. Returns whether `module` was one of them."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
        return True
    if isinstance(module, nn.LayerNorm):
        if module.weight is not None:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        return True
    return False


def build_norm2d(norm_cfg: Optional[dict], num_features: int) -> nn.Module:
    """BatchNorm from an OpenMMLab-style cfg (`dict(type='BN'|'SyncBN', eps=..., momentum=...)`).

    SyncBN becomes `nn.SyncBatchNorm`; mmengine's Runner reverts it to BN when training is not
    distributed, and `backbones.compat` reverts it for CPU (gloo) DDP, where SyncBN cannot run.
    """
    cfg = dict(norm_cfg or dict(type='BN'))
    kind = cfg.pop('type', 'BN')
    cfg.pop('requires_grad', None)
    if kind in BN_TYPES:
        return nn.BatchNorm2d(num_features, **cfg)
    if kind in SYNC_BN_TYPES:
        return nn.SyncBatchNorm(num_features, **cfg)
    raise ValueError(f"unsupported norm type {kind!r}; expected 'BN' or 'SyncBN'")


def _affine_of(x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor], mean: torch.Tensor,
               invstd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (scale, shift), shaped to broadcast over `x`, with batch_norm(x) = x * scale + shift."""
    scale = invstd if weight is None else invstd * weight
    shift = -mean * scale if bias is None else bias - mean * scale
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return scale.reshape(shape), shift.reshape(shape)


class _Recipe:
    """How to recompute a tensor in backward: `fn(*args)`, where args may be recipes themselves. The
    result is kept while the recipe lives (a few backward nodes share it), so each runs once."""
    __slots__ = ('fn', 'args', 'value')

    def __init__(self, fn: Callable, args: tuple):
        self.fn, self.args, self.value = fn, args, None

    def __call__(self) -> torch.Tensor:
        if self.value is None:
            self.value = self.fn(*(a() if isinstance(a, _Recipe) else a for a in self.args))
        return self.value


def _gelu_of_affine(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, approximate: str) -> torch.Tensor:
    """gelu(x * scale + shift) in x's dtype (bf16/fp16 under autocast, as the forward produced it)."""
    return torch.ops.aten.gelu_(torch.addcmul(shift, x, scale).to(x.dtype), approximate=approximate)


def _conv_again(x: torch.Tensor, conv: nn.Conv2d, version: int) -> torch.Tensor:
    if conv.weight._version != version:
        raise RuntimeError(f'{conv}: its weight was modified in place between forward and backward; the '
                           f'recomputed activation would differ (call the optimizer after backward)')
    bias = None if conv.bias is None else conv.bias.to(x.dtype)      # autocast cast them in forward
    return conv._conv_forward(x, conv.weight.to(x.dtype), bias)


class RecomputedActivations:
    """Context manager for training: selected activations produced inside it (outputs of
    `batch_norm_gelu`, of cheap depth-wise convolutions) are not held when a later operation inside it
    saves them for backward; a `_Recipe` is kept instead and that backward recomputes them from tensors
    that are held anyway (the BatchNorm input and statistics, the depth-wise convolution's recomputable
    input). Selective activation checkpointing: the dense convolutions never re-run and the BatchNorm
    running statistics are updated once. Not for use inside `torch.utils.checkpoint` (whose own
    saved-tensor hooks it would shadow)."""

    _active = threading.local()

    def __init__(self):
        self._recipes: dict[tuple, tuple[torch.Tensor, _Recipe]] = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    @staticmethod
    def _key(t: torch.Tensor) -> tuple:
        return t.data_ptr(), t.dtype, tuple(t.shape), t.stride(), t._version

    @classmethod
    def register(cls, out: torch.Tensor, fn: Callable, *args) -> None:
        """Inside a context: `out` equals `fn(*args)`; tensor args that are recomputable themselves are
        referenced through their recipes, so they are not held either."""
        current = getattr(cls._active, 'current', None)
        if current is not None:     # `out` is held until the context exits, so its address stays unique
            args = tuple(current._pack(a) if isinstance(a, torch.Tensor) else a for a in args)
            current._recipes[cls._key(out)] = (out, _Recipe(fn, args))

    @classmethod
    def active(cls) -> bool:
        return getattr(cls._active, 'current', None) is not None

    def _pack(self, t: torch.Tensor):
        entry = self._recipes.get(self._key(t))
        return entry[1] if entry is not None else t

    @staticmethod
    def _unpack(packed):
        return packed() if isinstance(packed, _Recipe) else packed

    def __enter__(self) -> 'RecomputedActivations':
        self._previous = getattr(self._active, 'current', None)
        self._active.current = self
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
        self._active.current = self._previous
        self._recipes.clear()


def recompute_activations(enabled: bool = True):
    """`RecomputedActivations()` while autograd records (not under compilation, not inside `checkpointed`),
    else a no-op."""
    if (enabled and torch.is_grad_enabled() and not torch.compiler.is_compiling()
            and not getattr(_CHECKPOINTED, 'depth', 0)):
        return RecomputedActivations()
    return contextlib.nullcontext()


_CHECKPOINTED = threading.local()


def checkpointed(fn: Callable, *args):
    """`fn(*args)` under a non-reentrant `torch.utils.checkpoint` (only the arguments stored; `fn`
    recomputed in backward), with `RecomputedActivations` off inside, in the forward and in the
    recomputation (its saved-tensor hooks would shadow the checkpoint's and hold what the checkpoint is
    meant to drop)."""
    def run(*inner):
        _CHECKPOINTED.depth = getattr(_CHECKPOINTED, 'depth', 0) + 1
        try:
            return fn(*inner)
        finally:
            _CHECKPOINTED.depth -= 1

    return checkpoint(run, *args, use_reentrant=False)


class _BatchNormGELU(torch.autograd.Function):
    """Training-mode `gelu(batch_norm(x))` that keeps only `x` and the batch statistics for backward:
    the normalised map (GELU's input) is recomputed there from them (one elementwise pass) instead of
    being held from forward to backward; the GELU output is computed in place."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                running_mean: Optional[torch.Tensor], running_var: Optional[torch.Tensor], momentum: float,
                eps: float, approximate: str) -> torch.Tensor:
        y, mean, invstd = torch.native_batch_norm(x, weight, bias, running_mean, running_var, True, momentum, eps)
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        ctx.eps, ctx.approximate = eps, approximate
        out = torch.ops.aten.gelu_(y, approximate=approximate)
        if RecomputedActivations.active():
            RecomputedActivations.register(out, _gelu_of_affine, x, *_affine_of(x, weight, bias, mean, invstd),
                                           approximate)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, bias, mean, invstd = ctx.saved_tensors
        scale, shift = _affine_of(x, weight, bias, mean, invstd)
        normalised = torch.addcmul(shift, x, scale).to(x.dtype)     # bf16/fp16 under autocast, as forward
        grad = torch.ops.aten.gelu_backward(grad.to(x.dtype), normalised, approximate=ctx.approximate)
        del normalised
        want = ctx.needs_input_grad
        grad_x, grad_w, grad_b = torch.ops.aten.native_batch_norm_backward(
            grad, x, weight, None, None, mean, invstd, True, ctx.eps,
            [want[0], weight is not None and want[1], bias is not None and want[2]])
        return grad_x, grad_w, grad_b, None, None, None, None, None


def batch_norm_gelu(x: torch.Tensor, norm: nn.modules.batchnorm._BatchNorm, act: nn.GELU) -> torch.Tensor:
    """`act(norm(x))` for a BatchNorm in training mode, holding ~1/3 less activation memory for
    backward (see `_BatchNormGELU`); running statistics updated exactly as `norm(x)` does."""
    momentum = 0.0 if norm.momentum is None else norm.momentum
    if norm.track_running_stats and norm.num_batches_tracked is not None:
        norm.num_batches_tracked.add_(1)
        if norm.momentum is None:        # cumulative moving average, as nn.BatchNorm
            momentum = 1.0 / float(norm.num_batches_tracked)
    return _BatchNormGELU.apply(x, norm.weight, norm.bias, norm.running_mean, norm.running_var, momentum,
                                norm.eps, act.approximate)


def conv_norm(x: torch.Tensor, conv: nn.Conv2d, norm: nn.Module, act: Optional[nn.Module] = None) -> torch.Tensor:
    """`act(norm(conv(x)))` (`act` None: `norm(conv(x))`). A BatchNorm in eval mode (running statistics)
    is folded into the convolution's weight and bias, so the activations are read once instead of twice;
    equal up to float rounding. Gradients still reach the conv and BN parameters (frozen-BN fine-tuning,
    `norm_eval=True`). In fp32 CPU inference the activation runs inside the oneDNN convolution."""
    if (norm.training or not isinstance(norm, nn.modules.batchnorm._BatchNorm)
            or norm.running_mean is None or not isinstance(conv, nn.Conv2d) or not _zero_padded(conv)
            or hooked(conv, norm)):
        y = conv(x)
        if (type(norm) is nn.BatchNorm2d and norm.training and type(act) is nn.GELU and torch.is_grad_enabled()
                and not hooked(conv, norm, act)):
            if RecomputedActivations.active() and type(conv) is nn.Conv2d and _depthwise(conv):  # cheap to redo
                RecomputedActivations.register(y, _conv_again, x, conv, conv.weight._version)
            return batch_norm_gelu(y, norm, act)
        y = norm(y)
        return y if act is None else activate(act, y, norm)
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    bias = -norm.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    if norm.bias is not None:
        bias = bias + norm.bias
    weight = conv.weight * scale.reshape(-1, 1, 1, 1).to(conv.weight.dtype)
    bias = bias.to(conv.weight.dtype)
    attr = _fused_attr(act)
    if attr is not None and _fused_ok(x, act):
        return _fused_conv(x, weight, bias, conv, attr)
    y = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    return y if act is None else activate(act, y, norm)


class ConvNormSequential(nn.Sequential):
    """`nn.Sequential` (same children, same state-dict keys) whose Conv2d → BatchNorm pairs run through
    `conv_norm` (BN folded into the convolution in eval mode)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        modules = list(self)
        i = 0
        while i < len(modules):
            module = modules[i]
            if (isinstance(module, nn.Conv2d) and i + 1 < len(modules)
                    and isinstance(modules[i + 1], nn.modules.batchnorm._BatchNorm)):
                act = modules[i + 2] if i + 2 < len(modules) and type(modules[i + 2]) in _FUSED_ACTS else None
                x = conv_norm(x, module, modules[i + 1], act)
                i += 3 if act is not None else 2
            else:
                x = module(x)
                i += 1
        return x


def run_maybe_checkpointed(fn: Callable, *args, enabled: bool):
    """Run `fn(*args)`, with non-reentrant activation checkpointing (`checkpointed`) when `enabled` and
    autograd is on."""
    if enabled and torch.is_grad_enabled():
        return checkpointed(fn, *args)
    return fn(*args)


def relative_position_index(window: int | tuple[int, int], table_window: Optional[int] = None) -> torch.Tensor:
    """Swin-style index (N, N) into a ((2t-1)², heads) relative position table, t = `table_window`
    (default w): the N tokens of a w×w window (or of a rows×cols cell, `window` a pair) row-major; offsets
    (dy, dx) ∈ [-(t-1), t-1]² address the table's centre rows, so a window smaller than the table's uses
    exactly its own offsets."""
    rows, cols = (window, window) if isinstance(window, int) else window
    t = max(rows, cols) if table_window is None else table_window
    if max(rows, cols) > t:
        raise ValueError(f'window {window} needs a table of window >= {max(rows, cols)}, got table_window {t}')
    coords = torch.stack(torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing='ij'))
    coords = coords.flatten(1)                                   # 2, N
    rel = coords[:, :, None] - coords[:, None, :] + (t - 1)      # 2, N, N
    return rel[0] * (2 * t - 1) + rel[1]


def relative_position_bias(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(heads, w², w²) bias from a ((2t-1)², heads) table and a (w², w²) `relative_position_index`. Gathered
    along the table's rows of its transpose, so the backward is a contiguous index_add over (heads, rows)
    (the plain `table[index]` accumulates a heads-strided gradient: 7.7 vs 0.2 ms for a 14×14 window)."""
    n = index.shape[-1]
    return table.t().index_select(1, index.reshape(-1)).view(-1, n, n)


def resize_relative_position_tables(state_dict: dict[str, torch.Tensor], own: dict[str, torch.Tensor],
                                    mode: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Resize every `*relative_position_bias_table` of `state_dict` whose row count differs from the
    model's (`own`, same heads) as the dense loaders do: (L, heads) → (1, heads, s, s) → interpolate
    (`mode` 'bilinear' | 'bicubic', align_corners=False) to (t, t) → (t², heads). Returns (new state
    dict, resized keys)."""
    adapted = []
    state_dict = dict(state_dict)
    for key, value in state_dict.items():
        if not key.endswith('relative_position_bias_table') or key not in own:
            continue
        target = own[key].shape
        if value.shape == target or value.shape[1] != target[1]:
            continue
        src, dst = math.isqrt(value.shape[0]), math.isqrt(target[0])
        grid = value.t().reshape(1, value.shape[1], src, src).float()
        grid = F.interpolate(grid, size=(dst, dst), mode=mode, align_corners=False)
        state_dict[key] = grid.reshape(value.shape[1], -1).t().to(value.dtype).contiguous()
        adapted.append(key)
    return state_dict, adapted
