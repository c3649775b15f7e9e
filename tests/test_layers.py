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
