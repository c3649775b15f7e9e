"""The backbone contract (shared/CONTRACT.md), checked generically for every registered variant.

Micro widths (each class's `micro_arch`) for running; the meta device for full-size construction.
"""
import math

import pytest
import torch

import backbones
from backbones import BACKBONE_CLASSES

VARIANTS = [(cls, arch) for cls in BACKBONE_CLASSES.values() for arch in cls.ARCHS]
IDS = [f'{cls.__name__}-{arch}' for cls, arch in VARIANTS]


def micro(cls, arch, **kw):
    torch.manual_seed(0)
    return cls(arch=cls.micro_arch(arch), **kw)


def test_every_family_is_registered():
    assert {'FocalNet', 'PCPVT', 'SVT', 'HRFormer'} <= set(BACKBONE_CLASSES)


@pytest.mark.parametrize('cls,arch', VARIANTS, ids=IDS)
def test_full_size_builds_on_meta(cls, arch):
    with torch.device('meta'):
        model = cls(arch=arch)
    assert len(model.feature_info) == len(model.out_indices) > 0
    assert sum(p.numel() for p in model.parameters()) > 1_000_000


@pytest.mark.parametrize('cls,arch', VARIANTS, ids=IDS)
def test_odd_size_forward_backward(cls, arch):
    model = micro(cls, arch).train()
    x = torch.randn(2, 3, 65, 97)
    outs = model(x)
    assert isinstance(outs, tuple) and len(outs) == len(model.feature_info)
    for out, info in zip(outs, model.feature_info):
        s = info['stride']
        assert out.shape[:2] == (2, info['channels'])
        assert out.shape[2] in (65 // s, math.ceil(65 / s)), (out.shape, s)
        assert out.shape[3] in (97 // s, math.ceil(97 / s)), (out.shape, s)
        assert torch.isfinite(out).all()
    sum(o.float().pow(2).mean() for o in outs).backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f'parameters without gradient: {no_grad[:10]}'


@pytest.mark.parametrize('cls,arch', VARIANTS, ids=IDS)
def test_with_cp_identical(cls, arch):
    ref = micro(cls, arch).eval()
    ckp = micro(cls, arch, with_cp=True).eval()
    ckp.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 64, 80)
    results = []
    for model in (ref, ckp):
        outs = model(x)
        sum(o.sum() for o in outs).backward()
        results.append((outs, {n: p.grad.clone() for n, p in model.named_parameters()}))
    for a, b in zip(results[0][0], results[1][0]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(grad, results[1][1][name], rtol=1e-6, atol=1e-7, msg=name)


@pytest.mark.parametrize('cls,arch', VARIANTS, ids=IDS)
def test_frozen_stages(cls, arch):
    num_stages = cls.num_stages_of(cls.resolve_arch(cls.micro_arch(arch)))   # isotropic FocalNet: 1
    for frozen in range(-1, num_stages):
        model = micro(cls, arch, frozen_stages=frozen)
        model.train()
        frozen_modules = [m for s in range(-1, frozen + 1) for m in model.stage_modules(s)] if frozen >= 0 else []
        if frozen >= 0:
            assert frozen_modules, 'stage_modules returned nothing'
        for module in frozen_modules:
            assert not module.training
            assert not any(p.requires_grad for p in module.parameters())
        trainable = [p for p in model.parameters() if p.requires_grad]
        assert trainable or frozen == num_stages - 1
    with pytest.raises(ValueError, match=f'frozen_stages={num_stages} is not accepted'):
        micro(cls, arch, frozen_stages=num_stages)


@pytest.mark.parametrize('cls', list(BACKBONE_CLASSES.values()), ids=list(BACKBONE_CLASSES))
def test_arch_dict_and_unknown_keys(cls):
    name = next(iter(cls.ARCHS))
    assert cls.resolve_arch(dict(cls.ARCHS[name])) == cls.resolve_arch(name)
    with pytest.raises(KeyError, match='unknown arch keys'):
        cls.resolve_arch({'no_such_argument': 1})
    with pytest.raises(KeyError, match='unknown arch'):
        cls.resolve_arch('no-such-variant')


def test_create_backbone_and_list():
    names = backbones.list_backbones()
    assert 'focalnet-tiny-srf' in names and 'twins-svt-small' in names and 'hrformer-small' in names
    with pytest.raises(KeyError):
        backbones.create_backbone('resnet-50')


@pytest.mark.parametrize('cls', list(BACKBONE_CLASSES.values()), ids=list(BACKBONE_CLASSES))
def test_norm_eval_keeps_batchnorm_in_eval(cls):
    arch = next(iter(cls.ARCHS))
    model = micro(cls, arch, norm_eval=True).train()
    batchnorms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not batchnorms:
        pytest.skip(f'{cls.__name__} has no BatchNorm layer (norm_eval concerns BatchNorm only)')
    assert not any(m.training for m in batchnorms)
    assert micro(cls, arch, norm_eval=False).train().training
