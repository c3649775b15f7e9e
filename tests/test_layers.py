"""Shared layers: BatchNorm folding, fused inference kernels, in-place paths, memory-lean BN+GELU."""
import copy

import pytest
import torch
from torch import nn

from backbones._layers import ConvNormSequential, conv_norm


def randomized_bn(channels: int, affine: bool = True) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels, eps=1e-5, affine=affine)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.2, 3.0)
    if affine:
        nn.init.uniform_(bn.weight, 0.5, 1.5)
        nn.init.uniform_(bn.bias, -0.5, 0.5)
    return bn


@pytest.mark.parametrize('bias,groups,stride,affine', [(False, 1, 1, True), (True, 1, 2, True),
                                                       (True, 8, 1, True), (False, 8, 2, False)])
def test_folded_eval_equals_conv_then_bn(bias, groups, stride, affine):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, stride, 1, groups=groups, bias=bias)
    bn = randomized_bn(8, affine).eval()
    x = torch.randn(2, 8, 13, 11)
    torch.testing.assert_close(conv_norm(x, conv, bn), bn(conv(x)), atol=1e-5, rtol=1e-5)


def test_gradients_reach_conv_and_frozen_bn_parameters():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(4, 6, 1), randomized_bn(6).eval()
    x = torch.randn(2, 4, 5, 5)
    conv_norm(x, conv, bn).square().sum().backward()
    folded = [p.grad.clone() for p in (conv.weight, conv.bias, bn.weight, bn.bias)]
    for p in (conv.weight, conv.bias, bn.weight, bn.bias):
        p.grad = None
    bn(conv(x)).square().sum().backward()
    for got, want in zip(folded, (conv.weight.grad, conv.bias.grad, bn.weight.grad, bn.bias.grad)):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_training_mode_uses_batch_statistics_and_updates_running_ones():
    conv, bn = nn.Conv2d(4, 6, 1), randomized_bn(6).train()
    before = bn.running_mean.clone()
    x = torch.randn(4, 4, 5, 5)
    out = conv_norm(x, conv, bn)
    assert not torch.equal(bn.running_mean, before)
    torch.testing.assert_close(out.mean((0, 2, 3)), bn.bias.detach(), atol=1e-5, rtol=0)


def test_sequential_keeps_keys_and_matches_plain_sequential():
    torch.manual_seed(0)
    mods = [nn.Conv2d(4, 4, 3, 2, 1, groups=4, bias=False), randomized_bn(4), nn.Conv2d(4, 6, 1, bias=False),
            randomized_bn(6), nn.ReLU()]
    plain, folded = nn.Sequential(*mods).eval(), ConvNormSequential(*mods).eval()
    assert list(plain.state_dict()) == list(folded.state_dict())
    x = torch.randn(2, 4, 9, 9)
    torch.testing.assert_close(folded(x), plain(x), atol=1e-5, rtol=1e-5)


def test_activate_gelu_in_place_only_without_gradients():
    from backbones._layers import activate
    act = nn.GELU()
    x = torch.randn(4, 8)
    want = act(x)
    with torch.no_grad():
        y = x.clone()
        out = activate(act, y, nn.Identity())
    assert out.data_ptr() == y.data_ptr() and torch.equal(out, want)     # reused, same values
    w = torch.randn(4, 8, requires_grad=True)
    h = w * 1.0
    out = activate(act, h, nn.Identity())
    assert out.data_ptr() != h.data_ptr()                                 # autograd path untouched
    out.sum().backward()
    torch.testing.assert_close(w.grad, torch.autograd.grad(act(w).sum(), w)[0])
    tanh = nn.GELU(approximate='tanh')
    with torch.no_grad():
        assert torch.equal(activate(tanh, x.clone(), nn.Identity()), tanh(x))


def test_add_residual_reuses_the_branch_only_when_nothing_changes():
    from backbones._layers import add_residual
    x, branch = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    want = x + branch
    with torch.no_grad():
        b = branch.clone()
        out = add_residual(x, b, nn.Identity())
        assert out.data_ptr() == b.data_ptr() and torch.equal(out, want)
        low = branch.to(torch.bfloat16)                         # autocast-style bf16 branch: no reuse
        out = add_residual(x, low, nn.Identity())
        assert out.dtype == torch.float32 and out.data_ptr() != low.data_ptr()
        small = branch[:, :1].clone()                           # broadcasting branch: no reuse
        assert add_residual(x, small, nn.Identity()).shape == x.shape
    w = torch.randn(2, 5, 8, requires_grad=True)
    b = branch.clone()
    out = add_residual(w, b, nn.Identity())
    assert out.data_ptr() != b.data_ptr() and torch.equal(b, branch)   # autograd path leaves it alone


@pytest.mark.parametrize('name', ['focalnet-tiny-srf', 'twins-svt-small', 'hrformer-small'])
def test_forward_hooks_see_the_plain_outputs(name):
    """The in-place / folded fast paths step aside for hooked modules: what a hook keeps stays intact."""
    from backbones._factory import _zoo
    cls, arch = _zoo()[name]
    torch.manual_seed(0)
    model = cls(arch=cls.micro_arch(arch)).eval()
    for m in model.modules():           # non-trivial BatchNorm statistics (HRFormer)
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    kept = {}
    # everything inside the transformer blocks, where the fast paths live (the stem's and bottlenecks'
    # BN outputs feed in-place ReLUs, as in the official code: not ours to change)
    watched = [(n, m) for n, m in model.named_modules()
               if any(part in n.split('.') for part in ('attn', 'mlp', 'ffn', 'modulation'))]
    handles = [m.register_forward_hook(lambda mod, args, out, n=n: kept.__setitem__(n, (out, out.clone())))
               for n, m in watched]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        hooked_out = model(x)
    for h in handles:
        h.remove()
    assert kept
    for n, (out, snapshot) in kept.items():
        assert torch.equal(out, snapshot), f'{n}: its output was overwritten after the hook saw it'
    with torch.no_grad():
        plain_out = model(x)                 # fast paths on again: same backbone outputs
    for a, b in zip(hooked_out, plain_out):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def _ran_mkldnn_kernel(fn) -> bool:
    """Whether `fn()` ran one of oneDNN's fused pointwise kernels."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return any(e.name.startswith('mkldnn::_') and 'pointwise' in e.name for e in prof.events())


@pytest.mark.parametrize('act', [None, nn.GELU(), nn.GELU(approximate='tanh'), nn.ReLU()])
def test_fused_kernels_match_the_plain_ops_in_fp32_inference(act):
    from backbones._layers import conv_act, linear
    torch.manual_seed(0)
    fc = nn.Linear(16, 24)
    conv, bn = nn.Conv2d(8, 8, 3, 1, 1, groups=8), randomized_bn(8).eval()
    tokens = torch.randn(2, 5, 7, 16)
    maps = torch.randn(2, 8, 9, 11).contiguous(memory_format=torch.channels_last)
    ident = (lambda t: t) if act is None else act
    cases = [(lambda: linear(fc, tokens, act), ident(fc(tokens))),
             (lambda: conv_norm(maps, conv, bn, act), ident(bn(conv(maps))))]
    if act is not None:
        cases.append((lambda: conv_act(maps, conv, act), act(conv(maps))))
    for fused, want in cases:
        with torch.no_grad():
            assert _ran_mkldnn_kernel(fused) == torch.backends.mkldnn.is_available()
            torch.testing.assert_close(fused(), want, atol=1e-5, rtol=1e-5)
        assert not _ran_mkldnn_kernel(fused)                    # autograd on: the plain ops
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
            assert not _ran_mkldnn_kernel(fused)                # autocast sees the plain ops


def test_fused_kernels_switch_off():
    import backbones._layers as layers
    fc, x = nn.Linear(4, 4), torch.randn(3, 4)
    with torch.no_grad():
        try:
            layers.FUSED_CPU = False
            assert not _ran_mkldnn_kernel(lambda: layers.linear(fc, x, nn.GELU()))
        finally:
            layers.FUSED_CPU = True
        try:
            torch.backends.mkldnn.enabled = False                                # torch's own switch
            assert not _ran_mkldnn_kernel(lambda: layers.linear(fc, x, nn.GELU()))
        finally:
            torch.backends.mkldnn.enabled = True
        handle = fc.register_forward_hook(lambda *args: None)
        assert not _ran_mkldnn_kernel(lambda: layers.linear(fc, x, nn.GELU()))   # hooked: the module runs
        handle.remove()


def _saved_bytes(fn) -> tuple[torch.Tensor, int]:
    storages = {}
    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(storages.values())


@pytest.mark.parametrize('momentum', [0.1, None])
@pytest.mark.parametrize('approximate', ['none', 'tanh'])
def test_training_batch_norm_gelu_matches_plain_and_keeps_less_for_backward(momentum, approximate):
    torch.manual_seed(0)
    act = nn.GELU(approximate=approximate)
    conv, bn = nn.Conv2d(8, 32, 1).double(), nn.BatchNorm2d(32, momentum=momentum).double()
    nn.init.uniform_(bn.weight, 0.5, 1.5)
    nn.init.uniform_(bn.bias, -0.5, 0.5)
    ref_conv, ref_bn = copy.deepcopy(conv), copy.deepcopy(bn)
    x = torch.randn(4, 8, 10, 12, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    for _ in range(2):                                       # twice: running statistics accumulate
        out, fused_bytes = _saved_bytes(lambda: conv_norm(x, conv, bn, act))
        want, plain_bytes = _saved_bytes(lambda: act(ref_bn(ref_conv(x))))
        grad = torch.randn_like(out)
        out.backward(grad)
        want.backward(grad)
    torch.testing.assert_close(out, want, atol=1e-12, rtol=0)
    for mine, ref in [(conv.weight, ref_conv.weight), (conv.bias, ref_conv.bias), (bn.weight, ref_bn.weight),
                      (bn.bias, ref_bn.bias)]:
        torch.testing.assert_close(mine.grad, ref.grad, atol=1e-10, rtol=1e-10)
    for name in ('running_mean', 'running_var', 'num_batches_tracked'):
        torch.testing.assert_close(getattr(bn, name), getattr(ref_bn, name), atol=1e-12, rtol=0)
    activation = out.numel() * out.element_size()
    assert plain_bytes - fused_bytes >= activation            # the normalised map is not held
    assert torch.autograd.gradcheck(lambda t: conv_norm(t, conv, bn, act), (x[:2, :, :3, :4].clone().requires_grad_(),))


def test_recomputed_ffn_activations_give_the_same_gradients(monkeypatch):
    """HRFormer's ConvFFN holds neither its hidden GELU outputs nor the depth-wise conv output for
    backward; recomputing them there gives bit-identical gradients and running statistics."""
    import backbones._layers as layers
    from backbones.hrformer import ConvFFN, HRFormer
    torch.manual_seed(0)
    lean = HRFormer(arch=HRFormer.micro_arch('small'), drop_path_rate=0.0).double().train()
    plain = copy.deepcopy(lean)
    ffns = [m for m in plain.modules() if isinstance(m, ConvFFN)]
    assert ffns and all(m.recompute_hidden for m in ffns)
    for m in ffns:
        m.recompute_hidden = False
    calls = {'gelu': 0, 'conv': 0}
    for name, key in (('_gelu_of_affine', 'gelu'), ('_conv_again', 'conv')):
        fn = getattr(layers, name)
        monkeypatch.setattr(layers, name, lambda *a, fn=fn, key=key: (calls.__setitem__(key, calls[key] + 1), fn(*a))[1])
    x = torch.randn(2, 3, 40, 56, dtype=torch.float64)
    grads = [torch.randn_like(o) for o in copy.deepcopy(plain)(x)]     # a copy: statistics untouched
    for model in (lean, plain):
        model.zero_grad()
        sum((o * g).sum() for o, g in zip(model(x), grads)).backward()
    # each FFN: its two hidden GELU outputs and its depth-wise conv output, each recomputed once
    assert calls == {'gelu': 2 * len(ffns), 'conv': len(ffns)}
    for (name, a), b in zip(lean.named_parameters(), plain.parameters()):
        if a.grad is not None or b.grad is not None:
            assert torch.equal(a.grad, b.grad), name
    for (name, a), b in zip(lean.named_buffers(), plain.buffers()):
        assert torch.equal(a, b), name


def test_recomputation_refuses_weights_changed_before_backward():
    from backbones._layers import recompute_activations
    torch.manual_seed(0)
    dw, bn = nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.BatchNorm2d(4)
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    with recompute_activations():
        y = conv_norm(conv_norm(x, nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.GELU()), dw, bn, nn.GELU())
    with torch.no_grad():
        dw.weight.add_(1.0)
    with pytest.raises(RuntimeError, match='modified'):
        y.sum().backward()


def test_lean_hrformer_training_under_bf16_autocast(monkeypatch):
    """The recomputed activations come back in the dtype autocast gave them (bf16 here, fp16 on GPU)."""
    import backbones._layers as layers
    from backbones.hrformer import ConvFFN, HRFormer
    torch.manual_seed(0)
    lean = HRFormer(arch=HRFormer.micro_arch('small'), drop_path_rate=0.0).train()
    plain = copy.deepcopy(lean)
    for m in plain.modules():
        if isinstance(m, ConvFFN):
            m.recompute_hidden = False
    x = torch.randn(2, 3, 48, 40)
    results = []
    for model, batch_norm_gelu in ((lean, layers.batch_norm_gelu), (plain, lambda y, norm, act: act(norm(y)))):
        monkeypatch.setattr(layers, 'batch_norm_gelu', batch_norm_gelu)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            outs = model(x)
            loss = sum(o.float().square().mean() for o in outs)
        loss.backward()
        results.append((outs, [p.grad for p in model.parameters()]))
    (lean_out, lean_grads), (plain_out, plain_grads) = results
    assert all(o.dtype == torch.bfloat16 for o in lean_out)
    for a, b in zip(lean_out, plain_out):
        torch.testing.assert_close(a.float(), b.float(), atol=2e-2, rtol=2e-2)
    for a, b in zip(lean_grads, plain_grads):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.isfinite(a).all()
            torch.testing.assert_close(a, b, atol=2e-2 * b.abs().max().item() + 1e-6, rtol=2e-2)


@pytest.mark.parametrize('shape,kernel,padding,bias', [
    ((2, 3, 11, 9), 5, 2, True),        # 'same' padding, several strips with a partial last one
    ((1, 4, 13, 7), (7, 5), (1, 3), False),  # rectangular kernel, less padding than 'same' on H
    ((2, 2, 9, 10), 5, 4, True),       # more padding than 'same': the output is larger than the input
])
def test_depthwise_backward_as_forward_convolutions(monkeypatch, shape, kernel, padding, bias):
    """`depthwise_conv`'s backward (flipped-kernel correlation for the input, strip-wise grouped forward
    convolution for the weight) equals the convolution's own gradients, to second order."""
    import backbones._layers as layers
    monkeypatch.setattr(layers, 'DEPTHWISE_STRIP_ROWS', 4)
    torch.manual_seed(0)
    conv = nn.Conv2d(shape[1], shape[1], kernel, padding=padding, groups=shape[1], bias=bias).double()
    x = torch.randn(*shape, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_()
    assert layers._depthwise_train_ok(x, conv)
    params = [x] + list(conv.parameters())
    out = layers.depthwise_conv(x, conv)
    want = conv(x)
    torch.testing.assert_close(out, want, atol=1e-13, rtol=0)
    grad = torch.randn_like(out)
    mine = torch.autograd.grad(out, params, grad, create_graph=True)
    ref = torch.autograd.grad(want, params, grad, create_graph=True)
    for a, b in zip(mine, ref):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    # second order (e.g. a gradient penalty) through the new backward
    second = torch.autograd.grad(sum(g.square().sum() for g in mine), params[:2])
    second_ref = torch.autograd.grad(sum(g.square().sum() for g in ref), params[:2])
    for a, b in zip(second, second_ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    small = x[:1, :, :6, :5].detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t, w: layers.depthwise_conv(t, conv), (small, conv.weight))


def test_depthwise_backward_only_where_it_applies():
    from backbones._layers import _depthwise_train_ok
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    dw = nn.Conv2d(4, 4, 5, padding=2, groups=4)
    assert _depthwise_train_ok(x, dw)
    for conv in (nn.Conv2d(4, 4, 3, padding=1, groups=4),          # small kernel: oneDNN's backward is fast
                 nn.Conv2d(4, 4, 5, stride=2, padding=2, groups=4), nn.Conv2d(4, 8, 5, padding=2, groups=4),
                 nn.Conv2d(4, 4, 5, padding=2), nn.Conv2d(4, 4, 5, padding='same', groups=4),
                 nn.Conv2d(4, 4, 5, padding=2, groups=4, padding_mode='reflect')):
        assert not _depthwise_train_ok(x, conv)
    with torch.no_grad():
        assert not _depthwise_train_ok(x, dw)
    assert not _depthwise_train_ok(x.detach(), dw.requires_grad_(False))
    dw.requires_grad_(True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert not _depthwise_train_ok(x, dw)
    handle = dw.register_forward_hook(lambda *args: None)
    assert not _depthwise_train_ok(x, dw)
    handle.remove()


def test_focalnet_training_gradients_with_the_depthwise_backward(monkeypatch):
    """A FocalNet with focal window 9 (kernels 9 and 11, as tiny-srf in dense configs) trains to the same
    gradients with the depth-wise backward as with the plain convolution's."""
    import backbones._layers as layers
    from backbones import FocalNet
    torch.manual_seed(0)
    model = FocalNet(arch=dict(FocalNet.micro_arch('tiny-srf'), focal_windows=[9] * 4), drop_path_rate=0.0).double().train()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert {m.kernel_size for m in convs} == {(9, 9), (11, 11)}
    x = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    grads = []
    for min_kernel in (5, 10 ** 6):
        monkeypatch.setattr(layers, 'DEPTHWISE_MIN_KERNEL', min_kernel)
        model.zero_grad()
        sum(o.square().mean() for o in model(x)).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for (name, _), a, b in zip(model.named_parameters(), *grads):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=1e-9, msg=name)


def test_mlp_chunks_large_training_activations(monkeypatch):
    """On the CPU an Mlp with a large hidden activation runs over token chunks (allocator-friendly blocks):
    same outputs and gradients as one pass; one pass under a hook; inference has its own thresholds."""
    import backbones._layers as layers
    from backbones._layers import Mlp
    torch.manual_seed(0)
    mlp = Mlp(6, 24, 5).double()
    x = torch.randn(2, 7, 9, 6, dtype=torch.float64, requires_grad=True)
    want = mlp(x)
    grad = torch.randn_like(want)
    want_grads = torch.autograd.grad(want, [x, *mlp.parameters()], grad)
    monkeypatch.setattr(layers, 'MLP_CHUNK_ABOVE', 0)
    monkeypatch.setattr(layers, 'MLP_CHUNK_BYTES', 24 * 4 * 10)             # 10 tokens per chunk
    assert mlp._chunk_rows(x) == 10
    calls = []
    handle = mlp.fc2.register_forward_hook(lambda m, i, o: calls.append(o.shape))
    assert mlp._chunk_rows(x) == 0                                           # a hook sees whole tensors
    handle.remove()
    monkeypatch.setattr(Mlp, '_forward', lambda self, t, f=Mlp._forward: (calls.append(t.shape), f(self, t))[1])
    out = mlp(x)
    assert calls == [(10, 6)] * 12 + [(6, 6)]                                # 126 tokens
    torch.testing.assert_close(out, want, atol=1e-14, rtol=0)
    for a, b in zip(torch.autograd.grad(out, [x, *mlp.parameters()], grad), want_grads):
        torch.testing.assert_close(a, b, atol=1e-13, rtol=1e-13)
    with torch.no_grad():
        assert mlp._chunk_rows(x) == 0                                       # below the inference threshold
        monkeypatch.setattr(layers, 'MLP_INFER_CHUNK_ABOVE', 0)
        monkeypatch.setattr(layers, 'MLP_INFER_CHUNK_BYTES', 24 * 4 * 50)    # 50 tokens per chunk
        assert mlp._chunk_rows(x) == 50
        calls.clear()
        torch.testing.assert_close(mlp(x), want, atol=1e-14, rtol=0)
        assert calls == [(50, 6), (50, 6), (26, 6)]


@pytest.mark.parametrize('patch,size', [(4, (30, 37)), (2, (16, 16))])
def test_patch_embedding_in_channels_last_memory(patch, size):
    """The CPU patch embedding runs its conv on a channels-last copy of the image: the tokens come out
    (N, H, W, C)-contiguous with no transposing copy, with the values and gradients of the plain NCHW conv."""
    from backbones._layers import PatchEmbed, channels_last_on_cpu
    torch.manual_seed(0)
    embed = PatchEmbed(3, 8, patch).double()
    x = torch.randn(2, 3, *size, dtype=torch.float64, requires_grad=True)
    assert channels_last_on_cpu(x).is_contiguous(memory_format=torch.channels_last)
    single = x[0]
    assert channels_last_on_cpu(single) is single                            # only 4-d batches
    padded = nn.functional.pad(x, (0, -size[1] % patch, 0, -size[0] % patch))
    conv_out = embed.proj(padded)
    assert conv_out.is_contiguous()                                          # the plain NCHW path
    want = embed.norm(conv_out.permute(0, 2, 3, 1))
    tokens = embed.proj(channels_last_on_cpu(padded)).permute(0, 2, 3, 1)
    assert tokens.is_contiguous()                                            # a free view, no copy
    out = embed(x)
    torch.testing.assert_close(out, want, atol=1e-13, rtol=0)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, [x, *embed.parameters()], grad)
    for a, b in zip(got, torch.autograd.grad(want, [x, *embed.parameters()], grad)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
