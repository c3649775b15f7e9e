"""HRFormer: fidelity to the official code (golden fixtures, manifest), switches, converters, loading."""
import copy
import json
import re

import pytest
import torch

from backbones import CheckpointError, count_parameters, load_pretrained
from backbones.hrformer import HRFormer, WindowAttention, convert_hrformer, relative_position_index
from conftest import GOLDEN, golden_case  # tests/ is on sys.path under pytest (rootdir conftest)

CASES = ['cls_a_224_unpatched', 'cls_a_128_patched', 'cls_b_100x76_patched',
         'pose_c_multiscale_128x96', 'pose_d_default_100x76']
# The official code version of each fixture, expressed with our switches.
POSE_SWITCHES = dict(with_rpe=False, fuse_upsample='bilinear')
CLS_SWITCHES = dict(with_rpe=True, fuse_upsample='nearest')   # = the defaults


def build_official(case: dict, **overrides) -> HRFormer:
    kw = case['official_kwargs']
    if 'cfg' in kw:    # classification: HighResolutionTransformer(cfg=MODEL.HRT, num_classes)
        return HRFormer(arch=kw['cfg'], **{**CLS_SWITCHES, **overrides})
    return HRFormer(arch=kw['extra'], **{'in_channels': kw['in_channels'], 'norm_cfg': kw['norm_cfg'],
                                         **POSE_SWITCHES, **overrides})


def run_case(case: dict, model: HRFormer) -> tuple:
    report = load_pretrained(model, case['checkpoint'])
    assert report.loaded == report.expected
    with torch.no_grad():
        return model.eval()(case['input'])


@pytest.mark.parametrize('name', CASES)
def test_golden(name):
    case = golden_case('hrformer', name)
    outs = run_case(case, build_official(case))
    assert len(outs) == len(case['outputs'])
    for mine, ref in zip(outs, case['outputs']):
        torch.testing.assert_close(mine, ref, atol=case['atol'], rtol=case['rtol'])


@pytest.mark.parametrize('name,wrong', [
    ('cls_b_100x76_patched', dict(fuse_upsample='bilinear')),
    ('cls_b_100x76_patched', dict(with_rpe=False)),
    ('pose_c_multiscale_128x96', dict(fuse_upsample='nearest')),
    ('pose_c_multiscale_128x96', dict(with_rpe=True)),
])
def test_golden_needs_the_right_switches(name, wrong):
    """Each switch matters: the other official behaviour misses the reference."""
    case = golden_case('hrformer', name)
    outs = run_case(case, build_official(case, **wrong))
    assert not all(torch.allclose(m, r, atol=case['atol'], rtol=case['rtol'])
                   for m, r in zip(outs, case['outputs']))


def test_golden_with_syncbn_in_eval():
    """The official pose configs use SyncBN; in eval mode it equals BN."""
    case = golden_case('hrformer', 'pose_d_default_100x76')
    model = build_official(case, norm_cfg=dict(type='SyncBN', requires_grad=True))
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    (out,) = run_case(case, model)
    torch.testing.assert_close(out, case['outputs'][0], atol=case['atol'], rtol=case['rtol'])


def test_relative_position_index_equals_official_buffer():
    sd = golden_case('hrformer', 'cls_a_224_unpatched')['checkpoint']['model']
    official = [v for k, v in sd.items() if k.endswith('relative_position_index')]
    assert official and all(torch.equal(v, relative_position_index(7)) for v in official)


# ---- manifest: every official variant and code version -----------------------------------------
MANIFEST = json.loads((GOLDEN / 'hrformer' / 'manifest.json').read_text())['entries']
ARCH_OF = {'hrt_tiny': 'tiny', 'hrt_small': 'small', 'hrt_base': 'base', 'hrt_base_win13': 'base-win13',
           'hrt_base_win15': 'base-win15'}


def arch_name(variant: str) -> str:
    return ARCH_OF[re.sub(r'_coco_\d+x\d+$', '', variant)]


def build_from_manifest(entry: dict) -> HRFormer:
    kw = entry['kwargs']
    with torch.device('meta'):
        if 'cfg' in kw:
            return HRFormer(arch=kw['cfg'])
        return HRFormer(arch=kw['extra'], in_channels=kw['in_channels'], norm_cfg=kw['norm_cfg'])


def test_manifest_covers_every_arch():
    assert len(MANIFEST) == 11
    assert {arch_name(e['variant']) for e in MANIFEST} == set(HRFormer.ARCHS)


@pytest.mark.parametrize('entry', MANIFEST, ids=[f"{e['variant']}-{e['code_version'][:4]}" for e in MANIFEST])
def test_manifest_maps_one_to_one(entry):
    model = build_from_manifest(entry)
    head = tuple(entry['head_prefixes'])
    official = {k: torch.empty(shape, device='meta') for k, shape, *_ in entry['state_dict']
                if not k.startswith(head)}
    converted = convert_hrformer(official)
    ours = model.state_dict()
    assert set(converted) == set(ours), (sorted(set(converted) ^ set(ours)))[:10]
    for key, value in ours.items():
        assert converted[key].shape == value.shape, key
    # every official tensor is used: only the derived index buffers are dropped, q/k/v are fused
    n_index = sum(k.endswith('relative_position_index') for k in official)
    n_qkv = sum(bool(re.search(r'\.[qkv]_proj\.', k)) for k in official)
    assert len(converted) == len(official) - n_index - n_qkv + n_qkv // 3
    assert count_parameters(model) == entry['params_excluding_head']
    # the named variant is this official config (up to the per-recipe drop-path rate and outputs)
    mine, named = HRFormer.resolve_arch(entry['kwargs'].get('cfg') or entry['kwargs']['extra']), \
        HRFormer.resolve_arch(arch_name(entry['variant']))
    for cfg in (mine, named):
        cfg.pop('drop_path_rate')
        cfg['stage4'].pop('multiscale_output')
    assert mine == named


def test_parameter_counts_of_the_report():
    """research/models.md §3.2 backbone-only counts, and the official pose counts."""
    expected = {'tiny': 2_572_388, 'small': 7_891_050, 'base': 44_040_666}
    for arch, n in expected.items():
        with torch.device('meta'):
            assert count_parameters(HRFormer(arch=arch)) == n
    with torch.device('meta'):
        assert count_parameters(HRFormer(arch='small', out_indices=(0,))) == 7_746_218
        assert count_parameters(HRFormer(arch='base', out_indices=(0,))) == 43_210_434


# ---- arch dicts ------------------------------------------------------------------------------------
def test_arch_dict_forms_agree():
    small = HRFormer.resolve_arch('small')
    pose = copy.deepcopy(small)
    pose['stage1'].update(num_heads=[2], num_mlp_ratios=[4])     # dead keys of the official configs
    assert HRFormer.resolve_arch(pose) == small
    mmpose = copy.deepcopy(small)                                 # mmpose 1.x spellings
    for s in ('stage2', 'stage3', 'stage4'):
        mmpose[s]['window_sizes'] = mmpose[s].pop('num_window_sizes')
        mmpose[s]['mlp_ratios'] = mmpose[s].pop('num_mlp_ratios')
        mmpose[s]['block'] = 'HRFORMERBLOCK'
    assert HRFormer.resolve_arch(mmpose) == small
    partial = HRFormer.resolve_arch(dict(stage2=dict(num_window_sizes=[9, 9])))
    assert partial['stage2']['num_window_sizes'] == [9, 9] and partial['stage2']['num_channels'] == [32, 64]
    with pytest.raises(KeyError, match='unknown arch keys'):
        HRFormer.resolve_arch(dict(stage2=dict(num_windows=[7, 7])))
    with pytest.raises(ValueError, match='isa_local'):
        HRFormer.resolve_arch(dict(STAGE2=dict(ATTN_TYPES=[[['msw', 'msw'], ['msw', 'msw']]])))


def test_multiscale_output_and_out_indices():
    pose_extra = dict(HRFormer.resolve_arch('small'))
    pose_extra['stage4'] = {k: v for k, v in pose_extra['stage4'].items() if k != 'multiscale_output'}
    with torch.device('meta'):
        assert HRFormer(arch=pose_extra).out_indices == (0,)          # official pose default
        assert HRFormer(arch='small').out_indices == (0, 1, 2, 3)
        model = HRFormer(arch='small', out_indices=(2, 0))
    assert [f['stride'] for f in model.feature_info] == [16, 4]
    assert [i for i, f in enumerate(model.stage4[-1].fuse_layers) if f is not None] == [0, 2]
    with pytest.raises(ValueError, match='multiscale_output'):
        HRFormer(arch=pose_extra, out_indices=(0, 1))
    micro = HRFormer(arch=HRFormer.micro_arch('small'), out_indices=(2, 0)).eval()
    outs = micro(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape[1:]) for o in outs] == [(24, 4, 4), (8, 16, 16)]


# ---- switches --------------------------------------------------------------------------------------
def test_without_rpe_tables_are_frozen_and_inert():
    torch.manual_seed(0)
    model = HRFormer(arch=HRFormer.micro_arch('small'), with_rpe=False).eval()
    tables = [p for n, p in model.named_parameters() if n.endswith('relative_position_bias_table')]
    assert tables and not any(p.requires_grad for p in tables)
    x = torch.randn(1, 3, 72, 56)
    before = model(x)
    with torch.no_grad():
        for p in tables:
            p.normal_()
    for a, b in zip(before, model(x)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_pad_mask_changes_only_windows_with_padding():
    torch.manual_seed(0)
    attn = WindowAttention(16, 2, 7, with_rpe=True, pad_mask=False).eval()
    masked = WindowAttention(16, 2, 7, with_rpe=True, pad_mask=True).eval()
    masked.load_state_dict(attn.state_dict())
    # 20×23 → padded 21×28: top 0 / bottom 1 rows, left 2 / right 3 columns; 3×4 windows
    x = torch.randn(2, 20, 23, 16)
    with torch.no_grad():
        a, b = attn(x), masked(x)
    assert a.shape == b.shape == x.shape
    diff = (a - b).abs().amax(dim=(0, 3))           # per output position (20 × 23)
    rows = torch.arange(20)                          # padded-frame row = row, column = col + 2
    cols = torch.arange(23) + 2
    window_row, window_col = rows // 7, cols // 7
    touches_pad = (window_row[:, None] == 2) | (window_col[None, :] == 0) | (window_col[None, :] == 3)
    assert diff[~touches_pad].max() == 0                     # interior windows: bit-identical
    assert (diff[touches_pad] > 1e-6).float().mean() > 0.9    # border windows: changed
    # with nothing padded the mask is a no-op
    y = torch.randn(1, 14, 21, 16)
    with torch.no_grad():
        torch.testing.assert_close(attn(y), masked(y), rtol=0, atol=0)


def test_pad_mask_model_level():
    torch.manual_seed(0)
    plain = HRFormer(arch=HRFormer.micro_arch('small')).eval()
    masked = HRFormer(arch=HRFormer.micro_arch('small'), pad_mask=True).eval()
    masked.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 112, 112)        # branch sizes 28/14/7/4: only the last one is padded
    with torch.no_grad():
        a, b = plain(x), masked(x)
    assert not torch.allclose(a[3], b[3])
    assert torch.isfinite(b[0]).all()


def test_norm_eval_and_syncbn():
    model = HRFormer(arch=HRFormer.micro_arch('small'), norm_eval=True,
                     norm_cfg=dict(type='SyncBN', requires_grad=True))
    model.train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and all(isinstance(m, torch.nn.SyncBatchNorm) for m in bns)
    assert not any(m.training for m in bns)
    assert all(m.training for m in model.modules() if isinstance(m, torch.nn.LayerNorm))


def test_frozen_stages_layout():
    model = HRFormer(arch=HRFormer.micro_arch('small'), frozen_stages=1).train()
    frozen = {n.split('.')[0] for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n.split('.')[0] for n, p in model.named_parameters() if p.requires_grad}
    assert frozen == {'conv1', 'norm1', 'conv2', 'norm2', 'layer1', 'transition1', 'stage2', 'transition2'}
    assert trainable == {'stage3', 'transition3', 'stage4'}


# ---- checkpoints ------------------------------------------------------------------------------------
def test_converter_is_idempotent_and_rejects_foreign_layouts():
    sd = golden_case('hrformer', 'cls_a_224_unpatched')['checkpoint']['model']
    once = convert_hrformer(sd)
    twice = convert_hrformer(once)
    assert once.keys() == twice.keys() and all(torch.equal(once[k], twice[k]) for k in once)
    with pytest.raises(CheckpointError, match='not an HRFormer checkpoint'):
        convert_hrformer({'patch_embed.proj.weight': torch.zeros(1), 'layers.0.blocks.0.x': torch.zeros(1)})
    broken = {k: v for k, v in sd.items() if not k.endswith('k_proj.weight')}
    with pytest.raises(CheckpointError, match='need q, k and v'):
        convert_hrformer(broken)


def test_full_pose_checkpoint_and_classification_head_are_handled():
    """mmpose-0.x style file ({'state_dict': backbone.* + keypoint_head.*}) and a cls file with head."""
    case = golden_case('hrformer', 'pose_d_default_100x76')
    wrapped = {'state_dict': {**{f'backbone.{k}': v for k, v in case['checkpoint'].items()},
                              'keypoint_head.final_layer.weight': torch.zeros(17, 8, 1, 1)},
               'meta': {}}
    model = build_official(case)
    load_pretrained(model, wrapped)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(case['input'])[0], case['outputs'][0],
                                   atol=case['atol'], rtol=case['rtol'])
    cls = golden_case('hrformer', 'cls_a_224_unpatched')
    sd = dict(cls['checkpoint']['model'])
    for key, shape in cls['omitted_head_keys']:
        sd[key] = torch.zeros(shape)
    report = load_pretrained(build_official(cls), {'model': sd})
    assert len(report.ignored) == len(cls['omitted_head_keys'])
    # the multi-scale classification weights also load into the single-output pose layout
    report = load_pretrained(HRFormer(arch=cls['official_kwargs']['cfg'], out_indices=(0,)), {'model': sd})
    assert any('stage4.0.fuse_layers.1' in k for k in report.ignored)


def test_relative_position_tables_resized_on_load():
    case = golden_case('hrformer', 'cls_a_224_unpatched')
    arch = HRFormer.resolve_arch(case['official_kwargs']['cfg'])
    for s in ('stage2', 'stage3', 'stage4'):
        arch[s]['num_window_sizes'] = [13] * len(arch[s]['num_window_sizes'])
    sd = dict(case['checkpoint']['model'])
    table_key = 'stage2.0.branches.0.0.attn.attn.relative_position_bias_table'
    sd[table_key] = torch.full_like(sd[table_key], 0.25)       # constant stays constant
    model = HRFormer(arch=arch)
    report = load_pretrained(model, {'model': sd})
    n_tables = sum(k.endswith('relative_position_bias_table') for k in sd)
    assert len(report.adapted) == n_tables
    table = model.stage2[0].branches[0][0].attn.relative_position_bias_table
    assert table.shape == (25 ** 2, 1)
    torch.testing.assert_close(table.detach(), torch.full_like(table, 0.25))
    # the centre of the 13×13 grid samples the centre of the 7×7 grid exactly (offset 0,0)
    src = case['checkpoint']['model']['stage3.0.branches.2.1.attn.attn.relative_position_bias_table']
    dst = model.stage3[0].branches[2][1].attn.relative_position_bias_table.detach()
    torch.testing.assert_close(dst.reshape(25, 25, -1)[12, 12], src.reshape(13, 13, -1)[6, 6])
    with torch.no_grad():
        assert torch.isfinite(model.eval()(case['input'])[0]).all()
    same = load_pretrained(HRFormer(arch=case['official_kwargs']['cfg']), case['checkpoint'])
    assert same.adapted == []


# ---- mmpose 1.x -------------------------------------------------------------------------------------
def mmpose_extra(arch: dict, **switches) -> dict:
    extra = dict(drop_path_rate=0.0, **switches)
    extra['stage1'] = dict(arch['stage1'])
    for s in ('stage2', 'stage3', 'stage4'):
        st = dict(arch[s])
        st['window_sizes'] = st.pop('num_window_sizes')
        st['mlp_ratios'] = st.pop('num_mlp_ratios')
        st['block'] = 'HRFORMERBLOCK'
        extra[s] = st
    return extra


def perturb_(state: dict, gen: torch.Generator) -> None:
    """Random weights at unit gain, non-trivial norms, BN statistics and RPE tables (in place)."""
    with torch.no_grad():
        for name, t in state.items():
            if not t.dtype.is_floating_point:
                continue
            noise = torch.randn(t.shape, generator=gen)
            if name.endswith('running_var'):
                t.copy_(0.5 + torch.rand(t.shape, generator=gen))
            elif name.endswith('relative_position_bias_table'):
                t.copy_(0.3 * noise)
            elif t.ndim >= 2:
                t.copy_(noise / (t[0].numel() ** 0.5))
            elif name.endswith('weight') and 'norm' in name:
                t.copy_(1 + 0.2 * noise)
            else:
                t.copy_(0.2 * noise)


@pytest.mark.parametrize('with_pad_mask', [False, True])
def test_mmpose_peer(with_pad_mask):
    """mmpose 1.x HRFormer and ours agree with: with_rpe=True (mmpose adds the bias), fuse_upsample=
    'bilinear' (mmpose: bilinear ×2^k, align_corners=False, no resize; sizes chosen with exact
    power-of-2 ratios, where mmpose runs), pad_mask = mmpose's with_pad_mask (mmpose masks only when
    both H and W are padded: every branch here pads both)."""
    hrformer_mod = pytest.importorskip('mmpose.models.backbones.hrformer')
    arch = HRFormer.micro_arch('small')
    torch.manual_seed(0)
    peer = hrformer_mod.HRFormer(extra=mmpose_extra(copy.deepcopy(arch), with_pad_mask=with_pad_mask),
                                 norm_cfg=dict(type='BN'))
    peer.init_weights()
    gen = torch.Generator().manual_seed(1)
    perturb_(peer.state_dict(), gen)
    ours = HRFormer(arch=arch, with_rpe=True, fuse_upsample='bilinear', pad_mask=with_pad_mask)
    report = load_pretrained(ours, {'state_dict': {f'backbone.{k}': v for k, v in peer.state_dict().items()}})
    assert report.loaded == report.expected
    x = torch.randn(2, 3, 128, 96, generator=gen)
    peer.eval()          # mmpose's HRNet.train() returns None
    with torch.no_grad():
        theirs, mine = peer(x), ours.eval()(x)
    assert len(theirs) == len(mine) == 4
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    # and the official-pose switch (no relative position bias) does not agree with mmpose
    no_rpe = HRFormer(arch=arch, with_rpe=False, fuse_upsample='bilinear', pad_mask=with_pad_mask)
    load_pretrained(no_rpe, {'state_dict': {f'backbone.{k}': v for k, v in peer.state_dict().items()}})
    with torch.no_grad():
        assert not torch.allclose(no_rpe.eval()(x)[0], theirs[0], atol=1e-4, rtol=1e-4)
