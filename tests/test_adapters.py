"""ARC adapters (backbones/adapters.py): formula, placement, exact merge on every family, training
(frozen tensors bit-identical, adapters move), adapter files, refusals. Micro widths, odd sizes."""
import copy
import re

import pytest
import torch
from torch import nn

import backbones
from backbones import BACKBONE_CLASSES, AdapterError, adapter_state_dict, load_adapters, merge_adapters, save_adapters
from backbones.adapters import ARCAdapter, LoRADelta, SharedBasis, base_fingerprint, is_adapter_key
from backbones._taps import tapped_blocks

VARIANTS = [(cls, arch) for cls in BACKBONE_CLASSES.values() for arch in cls.ARCHS]
IDS = [f'{cls.__name__}-{arch}' for cls, arch in VARIANTS]
FAMILIES = list(BACKBONE_CLASSES.values())
ARC = dict(type='ARC', bottleneck=4, dropout=0.1)


def first_arch(cls):
    return next(iter(cls.ARCHS))


def build(cls, arch=None, seed=0, **kw):
    """A micro model; with `adapter=`, the same base weights as the plain model of the same seed."""
    arch = cls.micro_arch(arch or first_arch(cls)) if not isinstance(arch, dict) else arch
    torch.manual_seed(seed)
    plain = cls(arch=arch, **{k: v for k, v in kw.items() if k != 'adapter'})
    with torch.no_grad():       # layerscale 1e-4 would hide the branches (and the adapters) in the outputs
        for name, p in plain.named_parameters():
            if re.search(r'(^|\.)gamma(_\d)?$', name):
                p.fill_(1.0)
    if 'adapter' not in kw:
        return plain
    model = cls(arch=arch, **kw)
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(is_adapter_key(k) for k in missing)
    return model


def randomise_adapters(model, seed=1, std=0.3):
    """Non-trivial adapters (s = 0 at init would make the mixer side an identity)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if is_adapter_key(name):
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


# ---- the adapter itself ---------------------------------------------------------------------------
def test_formula_matches_direct_reference():
    torch.manual_seed(0)
    basis = SharedBasis(12, 5)
    adapter = ARCAdapter(basis, dropout=0.0, scale_init='xavier', with_bias=True)
    with torch.no_grad():
        adapter.bias.normal_()
    x = torch.randn(3, 7, 12)
    w, s, b = basis.weight.double(), adapter.scale.double(), adapter.bias.double()
    xd = x.double()
    # x + Σ_j s_j (x · w_j) w_j + b, written out over the bottleneck
    expected = xd + sum(s[j] * (xd @ w[:, j])[..., None] * w[:, j] for j in range(5)) + b
    assert torch.allclose(adapter(x).double(), expected, atol=1e-5)
    m, bias = adapter.recomposed()
    assert torch.allclose(m, m.t()) and torch.allclose(xd @ m + bias, expected, atol=1e-10)


def test_init_follows_the_paper_and_dropout_acts_in_the_bottleneck():
    model = build(FAMILIES[0], adapter=dict(type='ARC', bottleneck=4))
    blocks = list(tapped_blocks(model))
    for _, block in blocks:
        mixer, mlp = block.mixer_tap.inner, block.mlp_tap.inner
        assert torch.count_nonzero(mixer.scale) == 0 and torch.count_nonzero(mixer.bias) == 0
        bound = (6 / (1 + 4)) ** 0.5
        assert torch.count_nonzero(mlp.scale) == 4 and mlp.scale.abs().max() <= bound
        assert mixer.dropout.p == mlp.dropout.p == 0.1          # the paper's default
    shared = model.adapter_shared
    assert all(isinstance(b, SharedBasis) for g in shared.values() for b in g.values())
    # one W per group and place, referenced (not copied) by every block of the group
    first_group = next(iter(shared.values()))
    users = [b.mixer_tap.inner for _, b in blocks if b.mixer_tap.inner.basis is first_group['mixer']]
    assert users and all(u.basis.weight is first_group['mixer'].weight for u in users)
    # dropout applies in training only
    randomise_adapters(model)
    adapter = blocks[0][1].mlp_tap.inner
    x = torch.randn(64, adapter.basis.weight.shape[0])
    adapter.train()
    assert not torch.equal(adapter(x), adapter(x))
    adapter.eval()
    assert torch.equal(adapter(x), adapter(x))


@pytest.mark.parametrize('cls', FAMILIES, ids=lambda c: c.__name__)
def test_mixer_only_adapters_start_as_identity(cls):
    plain = build(cls).eval()
    model = build(cls, adapter=dict(type='ARC', bottleneck=4, places=('mixer',))).eval()
    x = torch.randn(1, 3, 65, 97)
    with torch.no_grad():
        for a, b in zip(model(x), plain(x)):
            assert torch.equal(a, b)
    assert all(b.mlp_tap.inner is None for _, b in tapped_blocks(model))


# ---- merge ----------------------------------------------------------------------------------------
def check_merge(model, plain, size=(65, 97)):
    model = randomise_adapters(model).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        adapted = model(x)
        merged = merge_adapters(model)
        out = merged(x)
    assert list(merged.state_dict()) == list(plain.state_dict())
    assert not backbones.adapters.has_adapters(merged)
    for a, b in zip(out, adapted):
        assert rel_err(a, b) <= 1e-5
    # the adapters changed the outputs (else the check above proves nothing)
    with torch.no_grad():
        assert any(rel_err(p, a) > 1e-3 for p, a in zip(plain.eval()(x), adapted))
    copy.deepcopy(plain).load_state_dict(merged.state_dict(), strict=True)   # loads into a plain model
    return merged


@pytest.mark.parametrize('cls', FAMILIES, ids=lambda c: c.__name__)
def test_lora_baseline_formula_and_merge(cls):
    plain = build(cls)
    model = build(cls, adapter=dict(ARC, type='LoRA', bottleneck=2))
    lora_modules = [m for m in model.modules() if isinstance(m, LoRADelta)]
    assert lora_modules and all(torch.count_nonzero(m.lora_b) == 0 for m in lora_modules)   # identity at start
    consumer = next(m for m in model.modules() if isinstance(getattr(m, 'lora', None), LoRADelta))
    randomise_adapters(model)
    x = torch.randn(5, *consumer.weight.shape[1:]) if isinstance(consumer, nn.Linear) else \
        torch.randn(2, consumer.in_channels, 8, 8)
    consumer.eval()
    direct = (nn.functional.linear(x, consumer.weight + consumer.lora.delta(consumer), consumer.bias)
              if isinstance(consumer, nn.Linear) else
              nn.functional.conv2d(x, consumer.weight + consumer.lora.delta(consumer), consumer.bias,
                                   consumer.stride))
    assert torch.allclose(consumer(x), direct, atol=1e-5)
    check_merge(model, plain)


@pytest.mark.parametrize('cls,arch', VARIANTS, ids=IDS)
def test_merge_is_exact_for_every_variant(cls, arch):
    micro = cls.micro_arch(arch)
    plain = build(cls, micro)
    merged = check_merge(build(cls, micro, adapter=ARC), plain)
    assert merged.norm_eval is False
    assert [n for n, p in merged.named_parameters() if p.requires_grad] == \
        [n for n, p in plain.named_parameters() if p.requires_grad]


SWITCHES = [
    ('FocalNet', dict(use_postln=True, use_layerscale=True)),          # post-LN: taps on the raw inputs
    ('FocalNet', dict(use_postln=True, use_postln_in_modulation=True, normalize_modulator=True)),
    ('PCPVT', dict(qkv_bias=False, sr_ratios=[4, 2, 2, 1])),            # no q/kv bias: adapter without b
    ('SVT', dict(qkv_bias=False)),
]


@pytest.mark.parametrize('name,overrides', SWITCHES, ids=[f'{n}-{sorted(o)}' for n, o in SWITCHES])
def test_merge_is_exact_for_arch_switches(name, overrides):
    cls = BACKBONE_CLASSES[name]
    micro = dict(cls.micro_arch(first_arch(cls)), **overrides)
    plain = build(cls, micro)
    model = build(cls, micro, adapter=ARC)
    if overrides.get('qkv_bias') is False:
        assert any(b.mixer_tap.inner.bias is None for _, b in tapped_blocks(model))
    check_merge(model, plain)


@pytest.mark.skipif('HRFormer' not in BACKBONE_CLASSES, reason='HRFormer not registered')
@pytest.mark.parametrize('pad_mask', [False, True])
def test_merge_is_exact_with_padded_windows(pad_mask):
    """Official pad_mask=False attends zero-padded keys: the adapter bias must reach them as the merged
    qkv bias does (taps after the padding)."""
    cls = BACKBONE_CLASSES['HRFormer']
    micro = cls.micro_arch('small')
    plain = build(cls, micro, pad_mask=pad_mask, with_rpe=False)
    model = build(cls, micro, pad_mask=pad_mask, with_rpe=False, adapter=ARC)
    merged = check_merge(model, plain, size=(67, 45))
    assert merged.pad_mask is pad_mask


def test_merge_through_a_full_model_and_subsets():
    cls = FAMILIES[0]
    model = build(cls, adapter=ARC, out_indices=(1, 2))
    full = nn.Module()
    full.backbone = randomise_adapters(model)
    full.head = nn.Conv2d(model.out_channels[0], 2, 1)
    merged = merge_adapters(full)
    assert not backbones.adapters.has_adapters(merged)
    assert backbones.adapters.has_adapters(full)                     # a copy: the input is untouched
    assert set(merged.state_dict()) == {k for k in full.state_dict() if not is_adapter_key(k[9:])}


# ---- training -------------------------------------------------------------------------------------
@pytest.mark.parametrize('kind', ['ARC', 'LoRA'])
@pytest.mark.parametrize('cls', FAMILIES, ids=lambda c: c.__name__)
def test_training_moves_only_adapters(cls, kind):
    model = build(cls, adapter=dict(ARC, type=kind)).train()
    model.train()                                                     # again: still frozen, BN in eval
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert all(not m.training for m in bns)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(is_adapter_key(n) for n in trainable)
    total = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for n, p in model.named_parameters() if n in trainable) < 0.2 * total
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.05)
    for _ in range(3):
        opt.zero_grad()
        sum(o.pow(2).mean() for o in model(torch.randn(2, 3, 65, 97))).backward()
        opt.step()
    after = model.state_dict()
    frozen = [k for k in before if not is_adapter_key(k)]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen), \
        [k for k in frozen if not torch.equal(before[k], after[k])][:5]
    unmoved = [k for k in before if is_adapter_key(k) and torch.equal(before[k], after[k])]
    assert not unmoved, unmoved[:5]


def saved_bytes_and_grads(model, x, seed=5):
    """Bytes of the distinct non-parameter tensors autograd stores in one training forward (a pack hook,
    as the recomputing checkpoints see it), then the gradients of the input and of every trainable tensor."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    stored = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            stored[ptr] = t.untyped_storage().nbytes()
        return t

    x = x.clone().requires_grad_(True)
    torch.manual_seed(seed)                                           # the same dropout masks in both runs
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outs = model(x)
    sum((o * torch.linspace(-1, 1, o.shape[1]).view(1, -1, 1, 1)).sum() for o in outs).backward()
    return sum(stored.values()), [x.grad] + [p.grad for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize('kind,level', [('ARC', True), ('LoRA', True), ('ARC', 'all')])
@pytest.mark.parametrize('cls', FAMILIES, ids=lambda c: c.__name__)
def test_recompute_gives_the_same_gradients_and_stores_less(cls, kind, level):
    """recompute=True (default): the MLP branch and the adapters are recomputed in backward, with the same
    dropout masks ('all': the mixer branch too); gradients equal recompute=False's, and autograd stores less."""
    x = torch.randn(2, 3, 65, 97)
    runs = []
    for recompute in (False, level):
        model = build(cls, adapter=dict(ARC, type=kind, recompute=recompute)).train()
        randomise_adapters(model)
        runs.append(saved_bytes_and_grads(model, x))
    (stored_plain, grads_plain), (stored_recomputed, grads_recomputed) = runs
    assert len(grads_plain) == len(grads_recomputed) > 1
    for a, b in zip(grads_plain, grads_recomputed):
        assert a is not None and b is not None and torch.allclose(a, b, rtol=1e-5, atol=1e-6), rel_err(b, a)
    # ARC's adapters themselves are recomputed too; LoRA's (on the consumers, not in the taps) only in the
    # MLP branch, a small share of what a micro HRFormer stores (its attention)
    bound = 0.5 if level == 'all' else 0.9 if kind == 'ARC' else 1.0
    assert stored_recomputed < bound * stored_plain, (stored_recomputed, stored_plain)
    merged = merge_adapters(model)
    assert not any(getattr(m, 'recompute', False) for m in merged.modules())


@pytest.mark.parametrize('cls', FAMILIES, ids=lambda c: c.__name__)
def test_contract_kept_with_cp_and_frozen_stages(cls):
    ref = build(cls, adapter=ARC).eval()
    ckp = build(cls, adapter=ARC, with_cp=True).eval()
    ckp.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 65, 97)
    grads = []
    for model in (randomise_adapters(ref), randomise_adapters(ckp)):
        outs = model(x)
        sum(o.sum() for o in outs).backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    frozen = build(cls, adapter=ARC, frozen_stages=1).train()
    for stage in range(-1, 2):
        for module in frozen.stage_modules(stage):
            assert not any(p.requires_grad for p in module.parameters())
    assert any(p.requires_grad for p in frozen.parameters())


def test_create_backbone_and_full_size_budget():
    name = 'focalnet-tiny-srf'
    with torch.device('meta'):
        model = backbones.create_backbone(name, adapter=dict(type='ARC', bottleneck=50))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for n, p in model.named_parameters() if not is_adapter_key(n))
    assert 0 < trainable < 0.01 * total                               # < 1 % of the backbone


def test_load_pretrained_into_adapted_model():
    cls = FAMILIES[0]
    plain = build(cls, seed=3)
    model = build(cls, adapter=ARC)
    report = backbones.load_pretrained(model, plain.state_dict())
    assert report.loaded == len(plain.state_dict())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in plain.state_dict().items())


# ---- adapter files --------------------------------------------------------------------------------
def test_adapter_file_round_trip(tmp_path):
    cls = FAMILIES[0]
    full = nn.Module()
    full.backbone = randomise_adapters(build(cls, adapter=ARC))
    full.neck = nn.Conv2d(full.backbone.out_channels[-1], 4, 1)
    sd = adapter_state_dict(full)
    assert set(sd) == {k for k in full.state_dict() if k.startswith('neck.') or is_adapter_key(k[9:])}
    path = tmp_path / 'task.adapter.pth'
    payload = save_adapters(full, path, base='my-base')
    meta = payload['backbones']['backbone']
    assert meta['base'] == 'my-base' and len(meta['weights_sha256']) == 64
    assert torch.load(path, weights_only=True)['format'] == 'backbones-adapters'

    other = nn.Module()
    other.backbone = build(cls, adapter=ARC)                         # same base, fresh adapters
    other.neck = nn.Conv2d(full.backbone.out_channels[-1], 4, 1)
    load_adapters(other, path)
    x = torch.randn(1, 3, 65, 97)
    with torch.no_grad():
        for a, b in zip(full.eval().backbone(x), other.eval().backbone(x)):
            assert torch.equal(a, b)
    assert torch.equal(full.neck.weight, other.neck.weight)


# ---- refusals -------------------------------------------------------------------------------------
@pytest.mark.parametrize('cfg,words', [
    (dict(type='ARC', bottleneck=10_000), ['bottleneck=10000', 'larger than the width', 'accepted: an int <=']),
    (dict(type='ARC', places=('mixer', 'neck')), ["'neck'", 'places=', "['mixer', 'mlp']"]),
    (dict(type='VPT'), ["type='VPT'", "['ARC', 'LoRA']"]),
    (dict(type='ARC', rank=4), ["['rank']", 'unknown keys', 'bottleneck']),
    (dict(type='ARC', dropout=1.5), ['dropout=1.5', '[0, 1)']),
    (dict(type='ARC', recompute='yes'), ["recompute='yes'", "True (the MLP branches), 'all'"]),
])
def test_bad_config_refused(cfg, words):
    cls = FAMILIES[0]
    with pytest.raises(AdapterError) as err:
        cls(arch=cls.micro_arch(first_arch(cls)), adapter=cfg)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_merge_refusals_change_nothing():
    cls = FAMILIES[0]
    plain = build(cls)
    before = copy.deepcopy(plain.state_dict())
    with pytest.raises(AdapterError, match='without adapter='):
        merge_adapters(plain)
    merged = merge_adapters(randomise_adapters(build(cls, adapter=ARC)))
    state = copy.deepcopy(merged.state_dict())
    with pytest.raises(AdapterError, match='already merged'):
        merge_adapters(merged)
    for ref, model in ((before, plain), (state, merged)):
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in ref.items())


def test_wrong_base_refused_naming_both(tmp_path):
    cls = FAMILIES[0]
    trained = randomise_adapters(build(cls, adapter=ARC, seed=0))
    path = tmp_path / 'a.pth'
    save_adapters(trained, path, base='base-A')
    other = build(cls, adapter=ARC, seed=5)                            # another base
    other.init_cfg = dict(type='Pretrained', checkpoint='base-B')
    before = copy.deepcopy(other.state_dict())
    with pytest.raises(AdapterError) as err:
        load_adapters(other, path)
    message = str(err.value)
    assert "'base-A'" in message and "'base-B'" in message
    assert base_fingerprint(trained)[:16] in message and base_fingerprint(other)[:16] in message
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in before.items())
    merged = merge_adapters(trained)
    with pytest.raises(AdapterError, match='no adapters'):
        save_adapters(merged, tmp_path / 'b.pth')


@pytest.mark.parametrize('cls', FAMILIES, ids=lambda c: c.__name__)
def test_init_weights_keeps_adapters(cls):
    """create_backbone / OpenMMLab call init_weights() after construction: it must not touch adapters."""
    model = randomise_adapters(build(cls, adapter=ARC))
    adapters = {k: v.clone() for k, v in model.state_dict().items() if is_adapter_key(k)}
    model.init_weights()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in adapters.items())


# ---- end to end: tools/train.py writes adapter files, tools/test.py and merge-adapters use them ------
@pytest.mark.slow
def test_arc_run_adapter_file_evaluates_and_merges(tmp_path):
    """Seg demo: a plain run (the base), an ARC run started from it (`load_from`), then the same metrics
    from (a) the ARC run's own evaluation, (b) tools/test.py with base + adapter file, (c) the merged
    checkpoint (`backbones merge-adapters`) in the plain config."""
    pytest.importorskip('mmseg', reason='OpenMMLab stack not installed: run tools/setup_env.sh')
    import json
    import subprocess
    import sys
    from pathlib import Path

    from backbones.hub import sha256_of
    repo = Path(__file__).resolve().parents[1]
    plain_cfg = repo / 'configs' / 'demo' / 'fpn_twins-demo_demo-shapes.py'
    arc_cfg = repo / 'configs' / 'demo' / 'fpn_twins-demo-arc_demo-shapes.py'
    env = dict(__import__('os').environ, OMP_NUM_THREADS='1')

    def run(*args):
        proc = subprocess.run([sys.executable, *map(str, args)], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return proc

    def metrics(proc):
        return json.loads(proc.stdout.strip().splitlines()[-1])

    run(repo / 'tools' / 'make_demo_data.py', '--out', tmp_path / 'data' / 'demo')
    iters = ['train_cfg.max_iters=4', 'train_cfg.val_interval=4', 'default_hooks.checkpoint.interval=4']
    base_dir, arc_dir = tmp_path / 'base', tmp_path / 'arc'
    run(repo / 'tools' / 'train.py', plain_cfg, '--work-dir', base_dir, '--cfg-options', *iters)
    base = base_dir / 'iter_4.pth'
    run(repo / 'tools' / 'train.py', arc_cfg, '--work-dir', arc_dir, '--trust', base_dir,
        '--cfg-options', *iters, f'load_from={base}')
    adapter_file = arc_dir / 'adapters_final.pth'
    assert adapter_file.exists() and (arc_dir / 'adapters_iter_4.pth').exists()
    payload = torch.load(adapter_file, weights_only=True)
    meta = payload['backbones']['backbone']
    assert meta['base'] == str(base) and meta["base_sha256"] == sha256_of(base)
    backbone_keys = [k for k in payload['state_dict'] if k.startswith('backbone.')]
    assert backbone_keys and all(is_adapter_key(k[len('backbone.'):]) for k in backbone_keys)
    assert any(k.startswith('decode_head.') for k in payload['state_dict'])

    test = repo / 'tools' / 'test.py'
    runs = sorted(p for p in arc_dir.iterdir() if (p / 'vis_data' / 'scalars.json').exists())
    records = [json.loads(line) for line in (runs[-1] / 'vis_data' / 'scalars.json').read_text().splitlines()]
    full = [r for r in records if 'mIoU' in r][-1]                   # the ARC run's own evaluation
    from_file = metrics(run(test, arc_cfg, base, '--adapter', adapter_file, '--trust', base_dir,
                            '--work-dir', tmp_path / 't1'))
    assert from_file['mIoU'] == pytest.approx(full['mIoU'], abs=1e-6)
    assert from_file['aAcc'] == pytest.approx(full['aAcc'], abs=1e-6)
    merged = tmp_path / 'merged.pth'
    run('-m', 'backbones', 'merge-adapters', arc_cfg, adapter_file, '--base', base, '--trust', base_dir,
        '--out', merged)
    plain = metrics(run(test, plain_cfg, merged, '--work-dir', tmp_path / 't2'))
    assert plain['mIoU'] == pytest.approx(full['mIoU'], abs=0.05)


def test_benchmark_compares_the_adapted_model_with_the_plain_one():
    """`tools/benchmark.py --model-kwargs '{"adapter": ...}' --vs-plain`: the same variant built plainly in the
    peer's place, ratios against it (how the issue's training-memory goal is measured)."""
    from backbones.benchmark import benchmark, format_table
    records = benchmark(['focalnet-tiny-srf'], [(32, 48)], [1], ['train'], [1], ['fp32'], [False], False,
                        warmup=1, repeats=1, arch_overrides=dict(embed_dim=8, depths=[1, 1, 1, 1]), log=lambda _: None,
                        model_kwargs=dict(adapter=dict(type='ARC', bottleneck=4)), vs_plain=True)
    assert [r['impl'] for r in records] == ['plain', 'ours'] and not any('error' in r for r in records)
    plain, ours = records
    assert plain['model_kwargs'] == {} and ours['model_kwargs'] == dict(adapter=dict(type='ARC', bottleneck=4))
    assert ours['params_m'] > plain['params_m']                       # the adapters' own parameters
    assert ours['speedup_vs_peer'] == plain['median_ms'] / ours['median_ms'] and 'mem_ratio_vs_peer' in ours
    assert 'ours, plain' in format_table(records)
    with pytest.raises(ValueError, match='exclusive'):
        benchmark(['focalnet-tiny-srf'], [(32, 48)], [1], ['train'], [1], ['fp32'], [False], True, vs_plain=True)


@pytest.mark.parametrize('level', [True, 'all'])
def test_recomputed_branches_hold_nothing_of_their_own(monkeypatch, level):
    """Inside a recomputed branch, HRFormer's ConvFFN must not open its own selective-recomputation
    context (`RecomputedActivations`): its saved-tensor hooks would shadow the checkpoint's and keep the
    4·C-wide hidden maps alive (measured: 1.2 GB at 384² b2 for HRFormer-S)."""
    from backbones import _layers
    from backbones.hrformer import HRFormer
    entered = []
    enter = _layers.RecomputedActivations.__enter__
    monkeypatch.setattr(_layers.RecomputedActivations, '__enter__', lambda self: (entered.append(1), enter(self))[1])
    x = torch.randn(1, 3, 65, 97)
    for recompute, expect_entered in ((False, True), (level, False)):
        entered.clear()
        model = build(HRFormer, adapter=dict(ARC, recompute=recompute)).train()
        sum(o.sum() for o in model(x)).backward()
        assert bool(entered) == expect_entered, (recompute, len(entered))
    with torch.enable_grad():
        assert isinstance(_layers.recompute_activations(), _layers.RecomputedActivations)
        inside = _layers.checkpointed(lambda t: (entered.append(type(_layers.recompute_activations())), t * 2)[1],
                                      torch.ones(2, requires_grad=True))
        assert entered[-1] is not _layers.RecomputedActivations and inside.grad_fn is not None
