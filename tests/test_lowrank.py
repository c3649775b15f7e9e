"""Low-rank layers (MCUFormer factorisation): shapes, full-rank equality, SVD initialisation, per-stage
ranks, loading dense checkpoints, training, bad configurations. Micro widths only."""
import pytest
import torch
from torch import nn

from backbones import BACKBONE_CLASSES, LowRankConv1x1, LowRankLinear, load_pretrained
from backbones.lowrank import factorisable, rank_for

CLASSES = list(BACKBONE_CLASSES.values())
IDS = [c.__name__ for c in CLASSES]


def micro(cls, **kw):
    arch = next(iter(cls.ARCHS))
    torch.manual_seed(0)
    return cls(arch=cls.micro_arch(arch), drop_path_rate=0.0, **kw).eval()


def dense_layers(model):
    return [n for n, m in model.named_modules() if n and factorisable(m)]


@pytest.mark.parametrize('cls', CLASSES, ids=IDS)
def test_full_rank_reproduces_the_model(cls):
    dense = micro(cls)
    names = dense_layers(dense)
    assert names, 'the family has no linear / 1x1 layer to factorise'
    with torch.no_grad():                     # weights the low-rank model was not built from
        for p in dense.parameters():
            p.add_(0.05 * torch.randn_like(p))
    low = micro(cls, lowrank=dict(ratio=1.0))
    report = load_pretrained(low, {'state_dict': dense.state_dict()})       # dense layout → SVD factors
    assert len(report.adapted) == len(names)
    assert sorted(low.lowrank_layers) == sorted(names)
    assert not dense_layers(low)
    x = torch.randn(1, 3, 65, 97)
    with torch.no_grad():
        for a, b in zip(dense(x), low(x)):
            assert a.shape == b.shape
            assert (a - b).abs().max() <= 1e-5 * a.abs().max() + 1e-6


@pytest.mark.parametrize('cls', CLASSES, ids=IDS)
def test_per_stage_ratios_and_training(cls):
    model = micro(cls)
    stages = model.num_stages_of(model.arch_cfg) if hasattr(model, 'arch_cfg') else model.NUM_STAGES
    ratios = [1.0 - 0.2 * i for i in range(stages)]
    low = micro(cls, lowrank=dict(ratio=ratios))
    ranks = set(low.lowrank_layers.values())
    assert len(ranks) > 1 or stages == 1
    low.train()
    out = low(torch.randn(2, 3, 64, 64))
    sum(o.mean() for o in out).backward()
    for name, module in low.named_modules():
        if isinstance(module, LowRankLinear):
            assert module.middle.grad is not None and module.first.grad is not None, name


def test_svd_initialisation_and_truncation():
    torch.manual_seed(0)
    fc = nn.Linear(12, 8)
    layer = LowRankLinear(12, 8, rank=3)
    layer.init_from(fc.weight, fc.bias)
    u, s, vh = torch.linalg.svd(fc.weight.double())
    best = (u[:, :3] * s[:3]) @ vh[:3]                      # Eckart–Young: the best rank-3 approximation
    assert torch.allclose(layer.dense_weight().double(), best, atol=1e-5)
    assert torch.allclose(layer.middle, torch.diag(s[:3]).float(), atol=1e-5)
    assert torch.equal(layer.bias, fc.bias)
    x = torch.randn(5, 12)
    assert torch.allclose(layer(x), x @ best.float().T + fc.bias, atol=1e-5)
    assert rank_for(0.5, 12, 8) == 4 and rank_for(0.01, 12, 8) == 1 and rank_for(1.0, 64, 256) == 64


def test_conv1x1_stride_and_equality():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, 1, stride=2)
    assert factorisable(conv) and not factorisable(nn.Conv2d(6, 6, 3))
    assert not factorisable(nn.Conv2d(6, 6, 1, groups=2))
    layer = LowRankConv1x1(6, 10, rank=6, stride=(2, 2))
    layer.init_from(conv.weight.reshape(10, 6), conv.bias)
    x = torch.randn(1, 6, 9, 7)
    assert torch.allclose(layer(x), conv(x), atol=1e-5)


def test_lowrank_checkpoint_loads_as_is_and_reduces_parameters():
    cls = CLASSES[0]
    low = micro(cls, lowrank=0.25)
    again = micro(cls, lowrank=0.25)
    report = load_pretrained(again, {'state_dict': low.state_dict()})
    assert not report.adapted
    for (n, a), (_, b) in zip(low.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), n
    skip = micro(cls, lowrank=dict(ratio=0.25, skip_larger=True))
    assert sum(p.numel() for p in skip.parameters()) < sum(p.numel() for p in micro(cls).parameters())


def test_create_backbone_and_meta_build():
    from backbones import create_backbone
    with torch.device('meta'):
        model = create_backbone('twins-pcpvt-small', lowrank=dict(ratio=[0.9, 0.8, 0.6, 0.5]))
    assert model.lowrank_layers and all(p.device.type == 'meta' for p in model.parameters())
    fc1 = model.blocks[0][0].mlp.fc1
    assert isinstance(fc1, LowRankLinear) and fc1.rank == int(0.9 * 64)


@pytest.mark.parametrize('bad', [0.0, 1.5, [0.5, 0.5], dict(ratio=0.5, typo=1), dict(rank=3), 'half', True])
def test_bad_configurations_are_named(bad):
    with pytest.raises((ValueError, TypeError), match='lowrank'):
        micro(CLASSES[0], lowrank=bad)


def test_init_weights_factorises_a_dense_pretrained_checkpoint(tmp_path):
    """mmengine builds the optimizer before init_weights: the structure is final at construction and the
    pretrained dense weights arrive factorised into the same parameter objects."""
    cls = CLASSES[0]
    dense = micro(cls)
    with torch.no_grad():
        for p in dense.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path / 'dense.pth'
    torch.save({'state_dict': dense.state_dict()}, path)
    arch = cls.micro_arch(next(iter(cls.ARCHS)))
    low = cls(arch=arch, drop_path_rate=0.0, lowrank=1.0, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    params_before = [id(p) for p in low.parameters()]
    low.init_weights()
    assert [id(p) for p in low.parameters()] == params_before
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(dense(x), low.eval()(x)):
            assert (a - b).abs().max() <= 1e-5 * a.abs().max() + 1e-6


# ---- fit to a budget -------------------------------------------------------------------------------
@pytest.mark.parametrize('bad', ['', 'lots', '-5MB', '0', '12XB', '1.2.3MB'])
def test_bad_budgets_are_named(bad):
    from backbones.lowrank import parse_budget
    with pytest.raises(ValueError, match='--budget'):
        parse_budget(bad)


def test_budget_units():
    from backbones.lowrank import parse_budget
    assert parse_budget('256MB') == parse_budget('256 MiB') == 256 << 20
    assert parse_budget('1.5GB') == 3 << 29 and parse_budget('320KB') == 320 * 1024 and parse_budget(4096) == 4096


def test_fit_refuses_when_no_plan_fits():
    from backbones.lowrank import fit_budget
    with pytest.raises(ValueError, match=r'--budget: no plan fits 1\.0 MiB.*smallest plan needs'):
        fit_budget('hrformer-tiny', 1 << 20, (64, 64), log=lambda *a: None)


@pytest.mark.slow
def test_fit_writes_a_config_and_checkpoint_that_rebuild_the_plan(tmp_path):
    from backbones import create_backbone
    from backbones.lowrank import fit_budget, write_fit
    from backbones.memory import predict
    dense = predict('hrformer-tiny', (64, 64)).predicted_total_bytes
    budget = int(dense * 0.9)                   # forces a low-rank plan
    plan = fit_budget('hrformer-tiny', budget, (64, 64), ratios=(0.5, 0.25), log=lambda *a: None)
    assert plan['lowrank'] is not None and plan['predicted_total_bytes'] <= budget
    assert predict('hrformer-tiny', (64, 64), lowrank=plan['lowrank']).predicted_total_bytes <= budget
    config, weights = write_fit('hrformer-tiny', plan, budget, str(tmp_path))
    scope: dict = {}
    exec(open(config).read(), scope)
    cfg = dict(scope['backbone'])
    assert cfg.pop('type') == 'backbones.HRFormer'
    model = create_backbone('hrformer-tiny', lowrank=cfg['lowrank'], pretrained=cfg['init_cfg']['checkpoint']).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(plan['model'].eval()(x), model(x)):
            assert torch.equal(a, b)


# ---- with slimmable= (Scala): one mechanism slicing the low-rank layers, ranks as a dimension ----------
def _stages(model):
    return len(model.lowrank_cfg['ratio'])


@pytest.mark.parametrize('cls', CLASSES, ids=IDS)
def test_slimmable_lowrank_at_width_one_and_built_ranks_is_the_lowrank_model(cls):
    from backbones import slimming
    plain = micro(cls, lowrank=dict(ratio=0.75))
    ratios = [0.75] * _stages(plain)
    slim = micro(cls, lowrank=dict(ratio=ratios), slimmable=dict(widths=[0.5, 1.0]))
    assert slimming.rank_ratios(slim) == ratios and slim.lowrank_layers == plain.lowrank_layers
    report = load_pretrained(slim, {'state_dict': plain.state_dict()})       # low-rank layout: loaded as is
    assert not report.adapted
    x = torch.randn(1, 3, 65, 97)
    with torch.no_grad():
        expected = plain(x)
        assert all(torch.equal(a, b) for a, b in zip(expected, slim(x)))
        with slimming.at_width(slim, 1.0, ranks=ratios):      # the built ratios named: the same network
            assert all(torch.equal(a, b) for a, b in zip(expected, slim(x)))
        with slimming.at_width(slim, 1.0, ranks=[0.25] * _stages(plain)):
            lower = slim(x)
        assert slimming.get_ranks(slim) is None
        assert all(torch.equal(a, b) for a, b in zip(expected, slim(x)))     # restored exactly
    assert not any(torch.equal(a, b) for a, b in zip(expected, lower))


def test_rank_ratio_keeps_the_first_k_components_of_the_active_slice():
    from backbones import slimming
    cls = BACKBONE_CLASSES['PCPVT']
    model = micro(cls, lowrank=1.0, slimmable=dict(widths=[0.5, 0.75, 1.0]))
    layer = model.blocks[1][0].mlp.fc1                                   # stage 1: in C, out 4C
    full = {n: getattr(layer, n).detach().clone() for n in ('first', 'middle', 'last', 'bias')}
    seen = {}
    x = torch.randn(1, 3, 64, 64)
    for width in (1.0, 0.75):
        slimming.set_width(model, width, ranks=[1.0, 0.5, 1.0, 1.0])
        handle = layer.register_forward_pre_hook(
            lambda m, a: seen.update({n: getattr(m, n).detach().clone() for n in full}))
        with torch.no_grad():
            model(x)
        handle.remove()
        narrow = slimming.export_width(model, width).blocks[1][0].mlp.fc1        # the active in / out widths
        c_in, c_out = narrow.in_features, narrow.out_features
        assert (c_in < layer.in_features) == (width < 1)
        k = rank_for(0.5, c_in, c_out)
        assert k < min(c_in, c_out) and seen['first'].shape == (k, c_in) and seen['last'].shape == (c_out, k)
        # Isolated Activation: width 1 the first channels, an intermediate width the last ones
        cols, rows = (slice(0, c_in), slice(0, c_out)) if width == 1.0 else (slice(-c_in, None), slice(-c_out, None))
        assert torch.equal(seen['first'], full['first'][:k, cols])
        assert torch.equal(seen['middle'], full['middle'][:k, :k])
        assert torch.equal(seen['last'], full['last'][rows, :k])
        assert torch.equal(seen['bias'], full['bias'][rows])
    slimming.set_width(model, 1.0)
    assert torch.equal(layer.first, full['first'])


def test_ranks_are_refused_above_the_built_rank_and_without_lowrank_layers():
    from backbones import InvalidArgumentError, slimming
    cls = CLASSES[0]
    model = micro(cls, lowrank=0.5, slimmable=dict(widths=[0.5, 1.0]))
    n = _stages(model)
    slimming.set_width(model, 0.5, ranks=[0.5] * n)                      # up to the built ratios: fits
    with pytest.raises(InvalidArgumentError, match=r'ranks=.*rank \d+ > its built \d+'):
        slimming.set_width(model, 1.0, ranks=[0.9] * n)
    with pytest.raises(InvalidArgumentError, match='one rank ratio in'):
        slimming.set_width(model, 1.0, ranks=[0.5])
    with pytest.raises(InvalidArgumentError, match='rank .* > its built'):
        slimming.export_width(model, 1.0, ranks=[1.0] * n)
    plain = micro(cls, slimmable=dict(widths=[0.5, 1.0]))
    with pytest.raises(InvalidArgumentError, match='no low-rank layers'):
        slimming.set_width(plain, 0.5, ranks=[0.5] * n)
    with pytest.raises(InvalidArgumentError, match='skip_larger=False'):
        micro(cls, lowrank=dict(ratio=0.5, skip_larger=True), slimmable=dict(widths=[0.5, 1.0]))
