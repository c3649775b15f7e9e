"""Twins (PCPVT, SVT): golden outputs of the official code, manifest ↔ state-dict mapping, parameter
counts, LSA padding masks, checkpoint layouts (official/timm, mmseg) and a peer check against mmseg."""
import json
import re
import types

import pytest
import torch
import torch.nn.functional as F

import backbones
from backbones import twins
from backbones.twins import PCPVT, SVT, LocallyGroupedAttention, convert_twins
from backbones.weights import CheckpointError, load_pretrained
from tests.conftest import GOLDEN, REPO, golden_case

GOLDEN_CASES = {  # case → class (all official_kwargs are used as they are)
    'cls_a_pcpvt': PCPVT,
    'cls_b_svt': SVT,
    'seg_c_pcpvt': PCPVT,
    'seg_d_svt_extra_norm': SVT,
}
MANIFEST = json.loads((GOLDEN / 'twins' / 'manifest.json').read_text())
MANIFEST_VARIANTS = {  # official variant name → (our class, arch)
    'pcpvt_small_v0': (PCPVT, 'small'), 'pcpvt_base_v0': (PCPVT, 'base'), 'pcpvt_large_v0': (PCPVT, 'large'),
    'pcpvt_small': (PCPVT, 'small'), 'pcpvt_base': (PCPVT, 'base'), 'pcpvt_large': (PCPVT, 'large'),
    'alt_gvt_small': (SVT, 'small'), 'alt_gvt_base': (SVT, 'base'), 'alt_gvt_large': (SVT, 'large'),
}
UNUSED_OFFICIAL = ('norm.', 'head.')  # classification final norm and head: declared ignorable


def build_golden_model(case):
    data = golden_case('twins', case)
    model = GOLDEN_CASES[case](arch=data['official_kwargs'])
    report = load_pretrained(model, data['checkpoint'])
    return data, model.eval(), report


# ---- fidelity -------------------------------------------------------------------------------------
@pytest.mark.parametrize('case', list(GOLDEN_CASES))
def test_golden_outputs(case):
    data, model, report = build_golden_model(case)
    assert report.loaded == report.expected == len(model.state_dict())
    assert sorted(report.ignored) == ['head.bias', 'head.weight', 'norm.bias', 'norm.weight']
    assert not report.missing_optional
    with torch.no_grad():
        outs = model(data['input'])
    assert len(outs) == len(data['outputs'])
    for name, mine, ref in zip(data['output_names'], outs, data['outputs']):
        torch.testing.assert_close(mine, ref, atol=data['atol'], rtol=data['rtol'], msg=name)


@pytest.mark.parametrize('entry', MANIFEST['entries'], ids=lambda e: f"{e['variant']}-{e['code_version']}")
def test_manifest_maps_one_to_one(entry):
    cls, arch = MANIFEST_VARIANTS[entry['variant']]
    with torch.device('meta'):
        model = cls(arch=arch, out_norm=entry.get('extra_norm', False))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    official = {k: torch.empty(shape, device='meta') for k, shape, *_ in entry['state_dict']}
    converted = convert_twins(official)
    assert converted.keys() == official.keys()  # official layout: nothing renamed, nothing invented
    ignored = {k for k in converted if k.startswith(UNUSED_OFFICIAL)}
    assert all(model.is_ignorable_checkpoint_key(k) for k in ignored)
    assert {k: tuple(v.shape) for k, v in converted.items() if k not in ignored} == ours
    # parameter counts: ours = official total minus the unused classification norm/head
    unused = sum(converted[k].numel() for k in ignored)
    assert backbones.count_parameters(model) == entry['params_total'] - unused
    if 'params_excluding_modules_unused_by_forward' in entry:
        assert backbones.count_parameters(model) == entry['params_excluding_modules_unused_by_forward']


@pytest.mark.parametrize('cls,arch,total', [
    (PCPVT, 'small', 24_106_216), (PCPVT, 'base', 43_828_456), (PCPVT, 'large', 60_989_672),
    (SVT, 'small', 24_060_776), (SVT, 'base', 56_070_952), (SVT, 'large', 99_271_400)])
def test_parameter_counts_match_official_logs(cls, arch, total):
    """Classification totals (n_parameters of the official logs) = our backbone + final norm + head."""
    with torch.device('meta'):
        model = cls(arch=arch, out_norm=False)
    c = model.feature_info[-1]['channels']
    assert backbones.count_parameters(model) + 2 * c + (c * 1000 + 1000) == total


@pytest.mark.parametrize('cls', [PCPVT, SVT])
@pytest.mark.parametrize('arch', ['small', 'base', 'large'])
def test_structure_eps_alternation_and_peg(cls, arch):
    with torch.device('meta'):
        model = cls(arch=arch)
    for i, stage in enumerate(model.blocks):
        for j, block in enumerate(stage):
            assert block.norm1.eps == block.norm2.eps == 1e-6
            local = isinstance(block.attn, LocallyGroupedAttention)
            assert local == (cls is SVT and j % 2 == 0), (i, j)
            if not local and block.attn.sr_ratio > 1:
                assert block.attn.norm.eps == 1e-5
        assert model.patch_embeds[i].norm.eps == 1e-5
    assert (model.norm_list is not None) == (cls is SVT)  # official dense: extra_norm for SVT only
    if model.norm_list is not None:
        assert all(n.eps == 1e-6 for n in model.norm_list)


def test_peg_runs_after_the_first_block_only():
    model = SVT(arch=SVT.micro_arch('small')).eval()
    calls = []
    for i, stage in enumerate(model.blocks):
        for j, block in enumerate(stage):
            block.register_forward_hook(lambda *_, i=i, j=j: calls.append(('block', i, j)))
        model.pos_block[i].register_forward_hook(lambda *_, i=i: calls.append(('peg', i)))
    model(torch.randn(1, 3, 64, 64))
    expected = []
    for i, depth in enumerate(model.depths):
        expected += [('block', i, 0), ('peg', i)] + [('block', i, j) for j in range(1, depth)]
    assert calls == expected


# ---- window attention: padding and masks ----------------------------------------------------------
def lsa_reference(attn: LocallyGroupedAttention, x: torch.Tensor, hw, masked: bool = True):
    """Per window, plain attention over the window's real tokens (masked=True), or over the window
    including zero-padded tokens (masked=False, the official detection / buggy seg behaviour)."""
    h, w = hw
    ws, heads = attn.window_size, attn.num_heads
    n, _, c = x.shape
    grid = x.view(n, h, w, c)
    hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
    padded = F.pad(grid, (0, 0, 0, wp - w, 0, hp - h))
    out = torch.zeros(n, hp, wp, c)
    for r in range(0, hp, ws):
        for s in range(0, wp, ws):
            rows, cols = (slice(r, min(r + ws, h)), slice(s, min(s + ws, w))) if masked else \
                (slice(r, r + ws), slice(s, s + ws))
            tokens = padded[:, rows, cols].reshape(n, -1, c)
            q, k, v = attn.qkv(tokens).reshape(n, -1, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
            weights = (q @ k.transpose(-2, -1) * (c // heads) ** -0.5).softmax(-1)
            res = (weights @ v).transpose(1, 2).reshape(n, -1, c)
            out[:, rows, cols] = res.view(n, rows.stop - rows.start, cols.stop - cols.start, c)
    return attn.proj(out[:, :h, :w].reshape(n, h * w, c))


@pytest.mark.parametrize('hw', [(14, 10), (10, 14), (10, 11), (14, 21)],
                         ids=['pad-right-only', 'pad-bottom-only', 'pad-both', 'no-pad'])
def test_lsa_masks_padding_on_every_side(hw):
    torch.manual_seed(0)
    attn = LocallyGroupedAttention(16, 2, qkv_bias=True, window_size=7).eval()
    with torch.no_grad():
        attn.qkv.bias.normal_()  # padded zero tokens get k = v = bias: visible if attended
        x = torch.randn(2, hw[0] * hw[1], 16)
        ours = attn(x, hw)
        torch.testing.assert_close(ours, lsa_reference(attn, x, hw), atol=1e-5, rtol=1e-5)
        if hw[0] % 7 or hw[1] % 7:  # the check can fail: attending the padding gives other values
            assert (ours - lsa_reference(attn, x, hw, masked=False)).abs().max() > 1e-2


def test_lsa_valid_outputs_ignore_padded_content(monkeypatch):
    """Fill the padded area with random values instead of zeros: valid outputs must not change."""
    torch.manual_seed(0)
    attn = LocallyGroupedAttention(16, 2, qkv_bias=True, window_size=7).eval()
    x = torch.randn(1, 14 * 10, 16)  # one side (W) needs padding: the case the official code gets wrong
    with torch.no_grad():
        ref = attn(x, (14, 10))

        def noisy_pad(t, pad, *args, **kwargs):
            out = F.pad(t, pad, *args, **kwargs)
            return torch.where(F.pad(torch.ones_like(t), pad) > 0, out, torch.randn_like(out) * 100)

        monkeypatch.setattr(twins, 'F', types.SimpleNamespace(
            pad=noisy_pad, scaled_dot_product_attention=F.scaled_dot_product_attention))
        noisy = attn(x, (14, 10))
    torch.testing.assert_close(noisy, ref, atol=1e-5, rtol=1e-5)


# ---- checkpoint layouts ---------------------------------------------------------------------------
def official_to_mmseg(sd):
    """Independent writing of twins2mmseg.py's rules (research/models.md §2.5), official → mmseg."""
    out = {}
    for key, value in sd.items():
        if key.startswith('head.'):
            continue
        if key.endswith(('.attn.kv.weight', '.attn.kv.bias')):
            continue  # folded into in_proj with q
        new = key
        new = re.sub(r'^patch_embeds\.(\d+)\.proj\.', r'patch_embeds.\1.projection.', new)
        new = re.sub(r'^pos_block\.(\d+)\.proj\.0\.', r'position_encodings.\1.proj.', new)
        new = re.sub(r'^blocks\.', 'layers.', new)
        new = new.replace('.mlp.fc1.', '.ffn.layers.0.0.').replace('.mlp.fc2.', '.ffn.layers.1.')
        m = re.match(r'^(layers\.\d+\.\d+\.attn)\.q\.(weight|bias)$', new)
        if m:
            kv = sd[key.replace('.attn.q.', '.attn.kv.')]
            out[f'{m.group(1)}.attn.in_proj_{m.group(2)}'] = torch.cat([value, kv], 0)
            continue
        if new.endswith(('.attn.proj.weight', '.attn.proj.bias')) and \
                key.replace('.attn.proj.', '.attn.q.') in sd:  # GSA projection (LSA keeps attn.proj)
            new = new.replace('.attn.proj.', '.attn.attn.out_proj.')
        out[new] = value
    return out


@pytest.mark.parametrize('case', ['seg_c_pcpvt', 'seg_d_svt_extra_norm'])
def test_mmseg_layout_round_trip(case):
    data = golden_case('twins', case)
    official = data['checkpoint']
    mmseg_sd = official_to_mmseg(official)
    assert any('attn.attn.in_proj_weight' in k for k in mmseg_sd) and not any(k.startswith('blocks.') for k in mmseg_sd)
    converted = convert_twins(mmseg_sd)
    expected = {k: v for k, v in official.items() if not k.startswith('head.')}
    assert converted.keys() == expected.keys()
    for key in expected:
        assert torch.equal(converted[key], expected[key]), key
    # and through the public path, from an mmengine-style detector checkpoint
    model = GOLDEN_CASES[case](arch=data['official_kwargs'])
    load_pretrained(model, {'state_dict': {f'backbone.{k}': v for k, v in mmseg_sd.items()}})
    with torch.no_grad():
        outs = model.eval()(data['input'])
    for mine, ref in zip(outs, data['outputs']):
        torch.testing.assert_close(mine, ref, atol=data['atol'], rtol=data['rtol'])


def test_converter_is_noop_on_ours_and_rejects_unknown_layouts():
    model = SVT(arch=SVT.micro_arch('small'))
    ours = model.state_dict()
    assert convert_twins(ours).keys() == ours.keys()
    with pytest.raises(CheckpointError, match='unrecognised Twins checkpoint layout'):
        convert_twins({'stem.conv.weight': torch.zeros(1), 'stages.0.weight': torch.zeros(1)})
    with pytest.raises(CheckpointError, match='unexpected'):  # a PCPVT checkpoint is no SVT
        load_pretrained(SVT(arch=SVT.micro_arch('small')),
                        golden_case('twins', 'seg_c_pcpvt')['checkpoint'])


def test_arch_aliases_and_feature_info():
    assert PCPVT.resolve_arch('pcpvt-small') == PCPVT.resolve_arch('small') == PCPVT.resolve_arch('pcpvt-s')
    assert SVT.resolve_arch('svt-large') == SVT.resolve_arch('large')
    assert 'twins-pcpvt-small' in backbones.list_backbones() and 'twins-svt-base' in backbones.list_backbones()
    with torch.device('meta'):
        model = SVT(arch='base', out_indices=(1, 3))
    assert model.feature_info == [dict(channels=192, stride=8, index=1), dict(channels=768, stride=32, index=3)]


# ---- peer: mmseg's own implementation -------------------------------------------------------------
@pytest.mark.parametrize('case,mmseg_cls', [('seg_c_pcpvt', 'PCPVT'), ('seg_d_svt_extra_norm', 'SVT')])
def test_matches_mmseg_modules(case, mmseg_cls):
    """mmseg 1.2.2's PCPVT/SVT with the same weights (mmseg layout) give our outputs.

    mmseg builds every LayerNorm with eps 1e-5, whereas the official block and extra norms use 1e-6;
    we build ours with `norm_layer` eps 1e-5 so that both compute the same function. The input is a
    multiple of 32 (mmseg's patch embeddings pad 'corner' where ours, as upstream, floor) and its
    stage maps need window padding on both sides, where mmseg masks correctly.
    """
    mmseg_backbones = pytest.importorskip('mmseg.models.backbones')
    data = golden_case('twins', case)
    kwargs = dict(data['official_kwargs'], norm_layer='torch.nn.LayerNorm')  # eps 1e-5, as mmseg
    ours = GOLDEN_CASES[case](arch=kwargs).eval()
    load_pretrained(ours, data['checkpoint'])
    common = dict(in_channels=3, embed_dims=kwargs['embed_dims'], num_heads=kwargs['num_heads'],
                  mlp_ratios=kwargs['mlp_ratios'], qkv_bias=True, depths=kwargs['depths'],
                  sr_ratios=kwargs['sr_ratios'], drop_path_rate=0.0)
    if mmseg_cls == 'SVT':
        peer = mmseg_backbones.SVT(windiow_sizes=kwargs['wss'], norm_after_stage=True, **common)
    else:
        peer = mmseg_backbones.PCPVT(norm_after_stage=False, **common)
    missing, unexpected = peer.load_state_dict(official_to_mmseg(data['checkpoint']), strict=False)
    assert not missing and set(unexpected) == {'norm.weight', 'norm.bias'}
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))  # maps 16x24 … 2x3
    with torch.no_grad():
        theirs, mine = peer.eval()(x), ours(x)
    assert len(theirs) == len(mine) == 4
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a, b, atol=data['atol'], rtol=data['rtol'])
    if mmseg_cls == 'SVT':
        # 64x224: every stage map needs window padding at the bottom only; mmseg (like the official
        # seg code) then masks nothing and attends the padded zeros, we mask them: outputs differ.
        x = torch.randn(1, 3, 64, 224, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert all((a - b).abs().max() > 0.1 for a, b in zip(ours(x), peer(x)))


# ---- configs ---------------------------------------------------------------------------------------
TWINS_CONFIGS = sorted((REPO / 'configs' / 'twins').glob('*.py'))


@pytest.mark.parametrize('path', TWINS_CONFIGS, ids=[p.name for p in TWINS_CONFIGS])
def test_config_heads_match_backbone(path):
    """Every head/neck input width equals the configured backbone's outputs (meta-device build)."""
    for package in ('mmdet', 'mmseg', 'mmpose'):
        pytest.importorskip(package)
    from mmengine.config import Config
    cfg = Config.fromfile(str(path))
    spec = dict(cfg.model.backbone)
    cls = {'backbones.PCPVT': PCPVT, 'backbones.SVT': SVT}[spec.pop('type')]
    assert spec.pop('init_cfg')['checkpoint'] == f"{cls.ZOO_PREFIX}-{spec['arch']}_in1k"
    with torch.device('meta'):
        channels = cls(**spec).out_channels
    model = cfg.model
    if 'neck' in model:
        assert list(model.neck.in_channels) == channels
    if 'decode_head' in model and 'neck' not in model:  # UperNet reads the backbone directly
        assert list(model.decode_head.in_channels) == channels
        assert model.auxiliary_head.in_channels == channels[2]
    if 'head' in model:  # top-down pose: HeatmapHead on the last output
        assert model.head.in_channels == channels[-1] and len(channels) == 1
