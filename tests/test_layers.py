"""Shared layers: BatchNorm folded into the preceding convolution in eval mode."""
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
