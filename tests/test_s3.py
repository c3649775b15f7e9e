"""S3 (AutoFormerV2): golden fixtures of the official code, manifest mapping and parameter counts, the
generalised window rule, padding invariance, checkpoint layouts (official / timm / HF-hub), table resizing."""
import json
import os
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import backbones.s3 as s3_module
from backbones import CheckpointError, S3, convert_checkpoint, load_pretrained
from backbones._base import InvalidArgumentError
from backbones.s3 import attention_mask, convert_s3, window_layout
from tests.conftest import GOLDEN, golden_case

CASES = ['cls_a_s3t_224', 'cls_b_s3t_grid448_p1', 'cls_c_s3s_grid448_p1', 'cls_d_s3s_grid224x448_p1']
MANIFEST = json.loads((GOLDEN / 's3' / 'manifest.json').read_text())['entries']
CLASSIFIER_KEYS = ['norm.weight', 'norm.bias', 'head.weight', 'head.bias']


def official_arch(kwargs: dict) -> dict:
    """Every official constructor argument of a fixture is an arch key of ours."""
    arch = {k: v for k, v in kwargs.items() if k in S3.DEFAULTS}
    assert set(arch) == set(kwargs), set(kwargs) - set(arch)
    return arch


def build_case(case: dict, **overrides) -> S3:
    options = dict(out_indices=case['out_indices'], out_norm=False)
    options.update(overrides)
    return S3(arch=official_arch(case['official_kwargs']), **options)


def run(model: nn.Module, x: torch.Tensor) -> tuple:
    model.eval()                 # (mmdet's Swin.train() returns None)
    with torch.no_grad():
        return model(x)


def assert_outputs(outs, case: dict) -> None:
    assert len(outs) == len(case['outputs'])
    for mine, ref in zip(outs, case['outputs']):
        assert mine.shape == ref.shape
        torch.testing.assert_close(mine, ref, atol=case['atol'], rtol=case['rtol'])


def to_timm(sd: dict) -> dict:
    """The documented timm layout of an official state dict (timm's checkpoint_filter_fn renames): derived
    buffers dropped, PatchMerging `layers.i.downsample` → `layers.(i+1).downsample`, `head.` → `head.fc.`."""
    out = {}
    for key, value in sd.items():
        if key.endswith(('relative_position_index', 'attn_mask')):
            continue
        key = re.sub(r'^layers\.(\d+)\.downsample\.', lambda m: f'layers.{int(m.group(1)) + 1}.downsample.', key)
        out[re.sub(r'^head\.', 'head.fc.', key)] = value
    return out


# ---- golden fixtures ------------------------------------------------------------------------------
@pytest.mark.parametrize('name', CASES)
def test_golden(name):
    """Stage outputs (tokens after each stage's last block, before its PatchMerging) of the official model."""
    case = golden_case('s3', name)
    model = build_case(case)
    report = load_pretrained(model, case['checkpoint'])
    assert report.loaded == report.expected and sorted(report.ignored) == sorted(CLASSIFIER_KEYS)
    assert_outputs(run(model, case['input']), case)


@pytest.mark.parametrize('name', CASES)
def test_window_rule_reproduces_the_official_windows(name):
    """Per block, `window_layout` on the actual stage map gives the [window, shift] the official
    constructor set for the built img_size (cls_d: min(H, W) on 28x56 / 14x28 / 7x14 maps)."""
    case = golden_case('s3', name)
    model = build_case(case)
    for stage, (hw, official) in enumerate(zip(case['stage_resolutions'], case['window_shift'])):
        blocks = model.layers[stage].blocks
        assert [list(window_layout(*hw, b.window_size, b.shift_size)) for b in blocks] == official, stage


def test_generalised_rule_on_non_square_maps():
    assert window_layout(7, 14, 14, 7) == (7, 0)        # cls_d stage 3: min side, not per-axis
    assert window_layout(14, 28, 14, 7) == (14, 0)      # equal to the window: one window across, no shift
    assert window_layout(15, 40, 14, 7) == (14, 7)      # larger: windowed and shifted
    assert window_layout(5, 37, 7, 3) == (5, 0)         # 5x5 windows along the long side (37 padded to 40)
    assert attention_mask(14, 28, 14, 0) is None        # divisible, unshifted: no mask at all
    mask = attention_mask(5, 37, 5, 0)                  # unshifted: one key mask per window
    assert mask.shape == (8, 1, 25)
    last = mask[7].view(5, 5)                           # keys of the last window: 2 real columns, 3 padded
    assert (mask[:7] == 0).all() and (last[:, :2] == 0).all() and (last[:, 2:] == s3_module.PAD_MASK).all()
    shifted = attention_mask(9, 9, 7, 3)                # 14x14 padded, rolled: 4 windows, regions and padding
    assert shifted.shape == (4, 49, 49)
    assert set(shifted.unique().tolist()) == {0.0, s3_module.SHIFT_MASK, s3_module.PAD_MASK}


def test_golden_detects_a_wrong_window_rule(monkeypatch):
    """The same clamp on max(H, W) instead of min(H, W) shifts the odd blocks of the 14x28 and 7x14 stages
    of cls_d: the fixture tells the rules apart."""
    case = golden_case('s3', 'cls_d_s3s_grid224x448_p1')
    model = build_case(case)
    load_pretrained(model, case['checkpoint'])
    monkeypatch.setattr(s3_module, 'window_layout', lambda h, w, window, shift: (
        (max(h, w), 0) if max(h, w) <= window else (window, shift)))
    outs = run(model, case['input'])
    assert not torch.allclose(outs[-1], case['outputs'][-1], atol=case['atol'], rtol=case['rtol'])


def test_smaller_window_uses_the_tables_centre_rows():
    """A block whose table is for window 14 run on a 7x7 map equals a block with the 13x13-row centre of
    that table (the official clamped geometry): offsets index the table, nothing is resized."""
    case = golden_case('s3', 'cls_c_s3s_grid448_p1')       # stage 3 tables: 27x27 rows (window 14)
    big = build_case(case)
    load_pretrained(big, case['checkpoint'])
    arch = official_arch(case['official_kwargs'])
    arch['img_size'] = 56                                   # stage 3 map 7 → window 7, 13x13-row tables
    small = S3(arch=arch, out_indices=case['out_indices'], out_norm=False)
    state = {k: v.clone() for k, v in big.state_dict().items()}
    for key, value in state.items():
        if key.startswith('layers.3.') and key.endswith('relative_position_bias_table'):
            state[key] = value.reshape(27, 27, -1)[7:20, 7:20].reshape(169, -1)
    small.load_state_dict(state)
    x = case['input'][:, :, :56, :56]
    for a, b in zip(run(big, x), run(small, x)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


# ---- manifest: key mapping and parameter counts ---------------------------------------------------
def _variant(entry: dict) -> str:
    return {'S3-T': 'tiny', 'S3-S': 'small', 'S3-B': 'base'}[entry['variant']]


def _meta_state(state_dict: list) -> dict:
    return {k: torch.empty(shape, device='meta') for k, shape, *_ in state_dict}


def test_every_arch_is_in_the_manifest():
    assert {_variant(e) for e in MANIFEST} == set(S3.ARCHS)
    assert set(S3.zoo_names()) == {'s3-tiny', 's3-small', 's3-base'}


@pytest.mark.parametrize('entry', MANIFEST, ids=[e['variant'] for e in MANIFEST])
def test_manifest_maps_one_to_one(entry):
    name = _variant(entry)
    resolved = S3.resolve_arch(name)
    for key, value in entry['kwargs'].items():
        if key not in ('num_classes', 'drop_path_rate'):
            assert resolved[key] == value, (name, key)
    with torch.device('meta'):
        model = S3(arch=name, out_norm=False)
    official = _meta_state(entry['state_dict'])
    converted = convert_s3(official)
    ours = model.state_dict()
    assert set(converted) - set(ours) == set(CLASSIFIER_KEYS)
    assert all(model.is_ignorable_checkpoint_key(k) for k in CLASSIFIER_KEYS)
    assert set(ours) == set(converted) - set(CLASSIFIER_KEYS)
    for key, value in ours.items():
        assert tuple(converted[key].shape) == tuple(value.shape), key
    dropped = {k for k in official if k not in converted}
    assert dropped == {k for k, _, kind, *_ in entry['state_dict'] if kind == 'B'}   # only the derived buffers
    assert model.adapt_state_dict(converted)[1] == []
    final_norm = sum(torch.Size(s).numel() for k, s, *_ in entry['state_dict'] if k.startswith('norm.'))
    assert sum(p.numel() for p in model.parameters()) == entry['params_excluding_head'] - final_norm
    # the per-block geometry at 224 equals the official one
    for stage, (hw, official_ws) in enumerate(zip(entry['geometry_224']['stage_resolutions'],
                                                  entry['geometry_224']['window_shift'])):
        blocks = model.layers[stage].blocks
        assert [list(window_layout(*hw, b.window_size, b.shift_size)) for b in blocks] == official_ws


@pytest.mark.parametrize('entry', MANIFEST, ids=[e['variant'] for e in MANIFEST])
def test_manifest_built_at_448(entry):
    """img_size=448 builds the official 448 tables (S3-S stage 3: 729 rows) and parameter count."""
    at448 = entry['at_img_size_448']
    with torch.device('meta'):
        model = S3(arch=dict(S3.ARCHS[_variant(entry)], img_size=448), out_norm=False)
    head_and_norm = entry['params_total'] - entry['params_excluding_head'] + 2 * 768
    assert sum(p.numel() for p in model.parameters()) == at448['params_total'] - head_and_norm
    ours = model.state_dict()
    for key, _, shape in at448['state_dict_differences_vs_224']:
        if key.endswith('relative_position_bias_table'):
            assert list(ours[key].shape) == shape, key


def test_full_size_parameter_counts():
    counts = {}
    for name in S3.ARCHS:
        with torch.device('meta'):
            counts[name] = sum(p.numel() for p in S3(arch=name, out_norm=False).parameters())
    # backbone = the official total minus head (769,000) and final norm (1,536)
    assert counts == {'tiny': 28_328_674 - 770_536, 'small': 49_737_298 - 770_536, 'base': 71_125_762 - 770_536}


# ---- any input size: padding, masks, non-square -----------------------------------------------------
def micro(arch: str = 'tiny', **kw) -> S3:
    torch.manual_seed(0)
    return S3(arch=S3.micro_arch(arch), **kw)


def _outputs_with_padding_noise(model: S3, x: torch.Tensor, scale: float, monkeypatch) -> tuple[tuple, int]:
    """The model's outputs when the padded positions of every block's qkv windows hold noise of `scale`."""
    original, calls = s3_module.pad_roll, []

    def noisy_pad_roll(t: torch.Tensor, hp: int, wp: int, shift: int) -> torch.Tensor:
        y = original(t, hp, wp, shift)
        if (hp, wp) == tuple(t.shape[1:3]):
            return y
        calls.append(1)
        padded = original(torch.ones_like(t[..., :1]), hp, wp, shift) == 0     # where the padding landed
        assert int(padded.sum()) == t.shape[0] * (hp * wp - t.shape[1] * t.shape[2])
        return torch.where(padded, scale * torch.randn_like(y), y)

    monkeypatch.setattr(s3_module, 'pad_roll', noisy_pad_roll)
    monkeypatch.setattr(s3_module, 'plain_eager', lambda: False)      # the padded windows (traced graphs)
    torch.manual_seed(1)
    try:
        return run(model, x), len(calls)
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize('arch,size', [('tiny', (65, 97)), ('small', (71, 45)), ('base', (33, 130))])
def test_padded_tokens_never_change_real_outputs(arch, size, monkeypatch):
    """The padded windows of traced graphs: whatever the padded tokens hold (noise written into their
    queries, keys and values), the real tokens' outputs are unchanged: padded keys are masked, shifted or
    not, and padded queries dropped. (Eager runs have no padded token: the cell tests below.)"""
    model = micro(arch, out_norm=False)
    x = torch.randn(2, 3, *size)
    clean, padded_blocks = _outputs_with_padding_noise(model, x, 0.0, monkeypatch)
    noisy, _ = _outputs_with_padding_noise(model, x, 3.0, monkeypatch)
    assert padded_blocks >= 4
    for a, b in zip(clean, noisy):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_padding_test_is_sensitive(monkeypatch):
    """Without the padded-key mask the same noise does change real outputs (the test above can fail)."""
    model = micro('tiny', out_norm=False)
    x = torch.randn(1, 3, 65, 97)
    clean, _ = _outputs_with_padding_noise(model, x, 0.0, monkeypatch)
    monkeypatch.setattr(s3_module, 'PAD_MASK', 0.0)
    noisy, _ = _outputs_with_padding_noise(model, x, 3.0, monkeypatch)
    assert any(not torch.allclose(a, b, atol=1e-4) for a, b in zip(clean, noisy))


@pytest.mark.parametrize('h,w,win,shift', [(9, 9, 7, 3), (17, 25, 7, 3), (32, 32, 14, 7), (16, 16, 7, 3),
                                           (14, 28, 7, 0), (5, 37, 5, 0), (21, 21, 7, 3), (30, 45, 14, 7)])
def test_cells_are_the_official_shifted_window_regions(h, w, win, shift):
    """Two real tokens attend each other in the official layout (same padded, rolled window and mask 0)
    exactly when they share a cell of `cell_groups`; the cells tile the map."""
    cell = torch.full((h, w), -1, dtype=torch.long)
    count = 0
    for (r0, a, rows), (c0, b, cols) in s3_module.cell_groups(h, w, win, shift):
        for i in range(rows):
            for j in range(cols):
                assert (cell[r0 + i * a:r0 + (i + 1) * a, c0 + j * b:c0 + (j + 1) * b] == -1).all()
                cell[r0 + i * a:r0 + (i + 1) * a, c0 + j * b:c0 + (j + 1) * b] = count
                count += 1
    assert (cell >= 0).all()
    hp, wp = h + (-h) % win, w + (-w) % win
    ids = torch.arange(1, h * w + 1, dtype=torch.float64).view(1, h, w, 1)       # 0 marks padding
    windows = s3_module._partition(s3_module.pad_roll(ids, hp, wp, shift), win)[..., 0].long()   # nW, w²
    mask = attention_mask(h, w, win, shift)
    mask = torch.zeros(windows.shape[0], win * win, win * win) if mask is None else mask.expand(-1, win * win, -1)
    flat = cell.flatten()
    official = torch.zeros(h * w, h * w, dtype=torch.bool)
    for tokens, m in zip(windows, mask):
        real = tokens > 0
        t = tokens[real] - 1
        official[t[:, None], t[None, :]] = m[real][:, real] == 0
    assert torch.equal(official, flat[:, None] == flat[None, :])


@pytest.mark.parametrize('arch,size', [('tiny', (65, 97)), ('small', (71, 45)), ('base', (33, 130)),
                                       ('tiny', (224, 224)), ('tiny', (100, 37))])
def test_eager_cells_equal_the_padded_windows(arch, size, monkeypatch):
    """Eager attention per cell gives the padded-window graph's outputs and gradients (float rounding)."""
    model = micro(arch, out_norm=False).eval()          # eval: no dropout / drop path draws to match
    x = torch.randn(2, 3, *size)
    torch.manual_seed(1)
    weights = [torch.randn_like(o) for o in model(x)]

    def outputs_and_grads():
        model.zero_grad()
        outs = model(x)
        sum((o * g).sum() for o, g in zip(outs, weights)).backward()
        return [o.detach() for o in outs], {n: p.grad.clone() for n, p in model.named_parameters()}

    cells, cell_grads = outputs_and_grads()
    monkeypatch.setattr(s3_module, 'plain_eager', lambda: False)
    windows, window_grads = outputs_and_grads()
    for a, b in zip(cells, windows):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for name, grad in window_grads.items():
        torch.testing.assert_close(cell_grads[name], grad, rtol=1e-4, atol=1e-5 * grad.abs().max().item())


@pytest.mark.parametrize('eager', [True, False])
def test_attention_runs_its_linears_on_real_tokens_only(eager, monkeypatch):
    """qkv and proj see the N·H·W real tokens of a padded, shifted map, not padded ones, on both paths."""
    if not eager:
        monkeypatch.setattr(s3_module, 'plain_eager', lambda: False)
    model = micro('tiny', out_norm=False)
    block = model.layers[0].blocks[1]                       # stage 0 of 65x97: 17x25, window 7, shifted
    seen = []
    for fc in (block.attn.qkv, block.attn.proj):
        fc.register_forward_hook(lambda m, a, o: seen.append(a[0].shape[:-1].numel()))
    run(model, torch.randn(2, 3, 65, 97))
    assert block.layout(17, 25).shift == 3 and seen == [2 * 17 * 25] * 2


@pytest.mark.parametrize('size', [(32, 32), (33, 97), (97, 33), (61, 45), (224, 40)])
def test_any_size_non_square_and_odd(size):
    model = micro('small')
    outs = run(model, torch.randn(1, 3, *size))
    for out, info in zip(outs, model.feature_info):
        s = info['stride']
        assert out.shape == (1, info['channels'], -(-size[0] // s), -(-size[1] // s))
        assert torch.isfinite(out).all()


def test_taps_positions_and_consumers():
    model = micro('tiny')
    block = model.layers[0].blocks[1]
    seen = {}
    block.mixer_tap.register_forward_hook(lambda m, a, o: seen.update(mixer=tuple(o.shape)))
    block.mlp_tap.register_forward_hook(lambda m, a, o: seen.update(mlp=tuple(o.shape)))
    run(model, torch.randn(1, 3, 65, 97))                  # stage 0: 17x25 (window 7: padded 21x28 inside)
    assert seen == {'mixer': (1, 17, 25, 32), 'mlp': (1, 17, 25, 32)}
    assert block.tap_consumers() == {'mixer_tap': ['attn.qkv'], 'mlp_tap': ['mlp.fc1']}
    for paths in block.tap_consumers().values():
        assert all(isinstance(block.get_submodule(p), nn.Linear) for p in paths)


def test_frozen_stages_include_the_output_norm():
    model = micro('tiny', frozen_stages=1).train()
    frozen = {n.split('.')[0] + ('.' + n.split('.')[1] if n.startswith('layers') else '')
              for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {'patch_embed', 'layers.0', 'layers.1', 'norm0', 'norm1'}
    assert not model.layers[1].blocks.training and model.layers[2].blocks.training
    assert all(p.requires_grad for p in model.layers[1].downsample.parameters())   # merging into stage 2


def test_bad_arguments_name_themselves():
    with pytest.raises(InvalidArgumentError, match='num_heads'):
        S3(arch=dict(S3.micro_arch('tiny'), num_heads=[2, 1, 1, 2]))
    with pytest.raises(InvalidArgumentError, match='ape'):
        S3(arch=dict(S3.micro_arch('tiny'), ape=True))
    with pytest.raises(InvalidArgumentError, match='window_size'):
        S3(arch=dict(S3.micro_arch('tiny'), window_size=[[7], [7, 7], [7, 7], [7, 7]]))
    with pytest.raises(KeyError, match='unknown arch keys'):
        S3(arch={'windows': 7})


# ---- checkpoint layouts -----------------------------------------------------------------------------
def test_converter_is_idempotent_and_rejects_foreign_layouts():
    sd = golden_case('s3', 'cls_a_s3t_224')['checkpoint']['model']
    once = convert_s3(sd)
    twice = convert_s3(once)
    assert once.keys() == twice.keys() and all(torch.equal(once[k], twice[k]) for k in once)
    assert not any(k.endswith(('relative_position_index', 'attn_mask')) for k in once)
    focalnet_like = {'patch_embed.proj.weight': torch.zeros(1), 'layers.0.blocks.0.modulation.f.weight': torch.zeros(1)}
    with pytest.raises(CheckpointError, match='not an S3 checkpoint'):
        convert_s3(focalnet_like)


@pytest.mark.parametrize('layout', ['official-wrapped', 'timm', 'timm-no-head', 'hf-hub-safetensors'])
def test_other_layouts_give_the_golden_outputs(layout, tmp_path):
    """timm / HF-hub (timm safetensors) layouts built from the official fixture by the documented renames
    load through the same public path and reproduce the official outputs."""
    case = golden_case('s3', 'cls_b_s3t_grid448_p1')
    official = case['checkpoint']['model']
    if layout == 'official-wrapped':
        source = {'state_dict': {f'module.{k}': v for k, v in official.items()}}
    elif layout.startswith('timm'):
        source = to_timm(official)
        assert 'layers.3.downsample.reduction.weight' in source and 'layers.0.downsample.norm.weight' not in source
        if layout == 'timm-no-head':
            source = {k: v for k, v in source.items() if not k.startswith('head.')}
    else:
        from safetensors.torch import save_file
        path = tmp_path / 'model.safetensors'
        save_file({k: v.contiguous() for k, v in to_timm(official).items()}, str(path))
        source = str(path)
    model = build_case(case)
    report = load_pretrained(model, source)
    assert report.loaded == report.expected
    assert_outputs(run(model, case['input']), case)


def test_timm_layout_conversion_is_exact():
    sd = golden_case('s3', 'cls_a_s3t_224')['checkpoint']['model']
    ours = convert_checkpoint({'model': sd}, 's3')
    from_timm = convert_checkpoint(to_timm(sd), 's3')
    assert ours.keys() == from_timm.keys() and all(torch.equal(ours[k], from_timm[k]) for k in ours)


def test_relative_position_tables_resized_on_load():
    """Window 7 weights into a window-12 config (a dense recipe): tables resized bicubic as mmdet's Swin
    loader (constant tables stay constant; the centre offset samples the centre), other keys untouched."""
    case = golden_case('s3', 'cls_a_s3t_224')
    sd = dict(case['checkpoint']['model'])
    key = 'layers.0.blocks.0.attn.relative_position_bias_table'
    sd[key] = torch.full_like(sd[key], 0.25)
    arch = official_arch(case['official_kwargs'])
    arch['window_size'] = [[12, 12], [12, 12], [14, 14], [7, 7]]
    model = S3(arch=arch, out_norm=False)
    report = load_pretrained(model, {'model': sd})
    assert sorted(report.adapted) == sorted(f'layers.{i}.blocks.{j}.attn.relative_position_bias_table'
                                            for i in (0, 1) for j in (0, 1))
    table = model.layers[0].blocks[0].attn.relative_position_bias_table.detach()
    assert table.shape == (23 ** 2, 1)
    torch.testing.assert_close(table, torch.full_like(table, 0.25))
    src = case['checkpoint']['model']['layers.1.blocks.1.attn.relative_position_bias_table']
    expected = F.interpolate(src.t().reshape(1, -1, 13, 13), size=(23, 23), mode='bicubic',
                             align_corners=False).reshape(src.shape[1], -1).t()
    torch.testing.assert_close(model.layers[1].blocks[1].attn.relative_position_bias_table.detach(), expected)
    outs = run(model, torch.randn(1, 3, 100, 76))
    assert all(torch.isfinite(o).all() for o in outs)
    same = load_pretrained(build_case(case), case['checkpoint'])
    assert same.adapted == []


def test_mmdet_swin_layout_converts_and_the_benchmark_peer_agrees():
    """mmdet 3.3.0's SwinTransformer (the benchmark peer) with S3's head dim 32 and window 7 everywhere, its
    state dict converted by ours (unfold-ordered PatchMerging re-laid out): same outputs on maps where both
    window the same way (every stage map a multiple of 7 and larger than 7; mmdet never clamps windows)."""
    mmdet_backbones = pytest.importorskip('mmdet.models.backbones')
    torch.manual_seed(0)
    peer = mmdet_backbones.SwinTransformer(embed_dims=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8], window_size=7,
                                           drop_path_rate=0.0, out_indices=(0, 1, 2, 3), convert_weights=False)
    with torch.no_grad():
        for p in peer.parameters():       # perturbed: identity norms would hide a wrong PatchMerging order
            p.add_(0.1 * torch.randn_like(p))
    ours = S3(arch=dict(embed_dim=[32, 64, 128, 256], depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8],
                        window_size=7, mlp_ratio=4.0), drop_path_rate=0.0)
    report = load_pretrained(ours, {'state_dict': {f'backbone.{k}': v for k, v in peer.state_dict().items()}})
    assert report.loaded == report.expected and not report.missing_optional
    x = torch.randn(1, 3, 448, 448)
    for a, b in zip(run(ours, x), run(peer, x)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_cli_converts_timm_layout_and_prints_the_card(tmp_path, capsys):
    """`backbones convert --family s3` turns a timm-layout file into ours (checked against S3-T-shaped
    micro weights by loading); `backbones card s3` prints the generated card."""
    from backbones import cli
    case = golden_case('s3', 'cls_a_s3t_224')
    src = tmp_path / 'timm_layout.pth'
    torch.save(to_timm(case['checkpoint']['model']), src)
    assert cli.main(['convert', str(src), '--family', 's3', '--out', str(tmp_path / 'out'), '--name', 'mine']) == 0
    written = list((tmp_path / 'out').glob('mine-*.pth'))
    assert len(written) == 1
    model = build_case(case)
    report = load_pretrained(model, str(written[0]))
    assert report.loaded == report.expected
    assert_outputs(run(model, case['input']), case)
    capsys.readouterr()
    assert cli.main(['card', 's3']) == 0
    assert capsys.readouterr().out.startswith('# S3 (AutoFormerV2)')


def test_benchmark_timm_peer_runs_in_its_own_interpreter(monkeypatch):
    """`--compare --peer timm --peer-python PY`: the peer's worker runs under PY (this package on its
    PYTHONPATH) and writes its state dict in round 0, before ours, which loads that file; the table names the
    peer and its torch. Only S3 has a timm peer."""
    from backbones import benchmark as bench
    real_measure = bench.measure
    seen = []

    def fake_measure(cfg):
        seen.append(cfg)
        ms = 10.0 if cfg.impl == 'peer' else 8.0
        return dict(bench.asdict(cfg), median_ms=ms, min_ms=ms, max_ms=ms, iqr_ms=0.0, times_ms=[ms],
                    peak_mem_mib=2.0, torch='9.9')
    monkeypatch.setattr(bench, 'measure', fake_measure)
    records = bench.benchmark(['s3-tiny'], [(64, 64)], [1], ['train'], [1], ['fp32'], [False], True, rounds=2,
                              log=lambda _: None, peer_source='timm', peer_python='/opt/peer/bin/python')
    assert [(c.impl, c.python) for c in seen] == [('peer', '/opt/peer/bin/python'), ('ours', ''),
                                                  ('ours', ''), ('peer', '/opt/peer/bin/python')]
    state = seen[0].state_path
    assert state and seen[1].checkpoint == state and seen[2].checkpoint == state and seen[3].state_path is None
    assert all(c.peer_source == 'timm' for c in seen)
    assert records[1]['speedup_vs_peer'] == pytest.approx(10.0 / 8.0)
    assert 'timm swin_s3 (torch 9.9)' in bench.format_table(records)
    with pytest.raises(ValueError, match='timm'):
        bench.build_peer('twins-svt-small', source='timm')
    with pytest.raises(ValueError, match='needs compare'):
        bench.benchmark(['s3-tiny'], [(64, 64)], [1], ['train'], [1], ['fp32'], [False], False, peer_source='timm')
    # the worker's command and environment: PY, with this package importable
    captured = {}

    def fake_run(cmd, env, **kwargs):
        captured.update(cmd=cmd, env=env)
        return type('Done', (), dict(returncode=1, stderr='ModuleNotFoundError: timm', stdout=''))()
    monkeypatch.setattr(bench.subprocess, 'run', fake_run)
    result = real_measure(bench.Config(variant='s3-tiny', impl='peer', peer_source='timm', python='/opt/py'))
    assert result['error'] == 'ModuleNotFoundError: timm'
    assert captured['cmd'][0] == '/opt/py'
    root = str(Path(bench.__file__).resolve().parents[1])
    assert captured['env']['PYTHONPATH'].split(os.pathsep)[0] == root
