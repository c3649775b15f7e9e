"""Attention locality analysis: analytic cases, padding, GSA key centres, hooks on real micro backbones."""
import math
from pathlib import Path

import pytest
import torch

from backbones._base import BACKBONE_CLASSES
from backbones.analysis import (AttentionChunk, AttentionLocality, centred_window_distance, chunk_statistics,
                                find_attention_layers, mean_grid_distance, summarize, _gsa_chunks)


def _grid(h, w, step=1.0):
    rows = (torch.arange(h, dtype=torch.float64) + 0.5) * step
    cols = (torch.arange(w, dtype=torch.float64) + 0.5) * step
    return torch.stack(torch.meshgrid(rows, cols, indexing='ij'), -1).reshape(-1, 2)


def test_one_hot_self_attention_gives_zero_mad_and_entropy():
    pos = _grid(4, 5)
    probs = torch.eye(20, dtype=torch.float64)[None, None, None].expand(2, 1, 3, 20, 20)
    stats = chunk_statistics(AttentionChunk(probs, pos[None], pos[None]), stride=8)
    assert torch.equal(stats['mad'], torch.zeros(2, 3, dtype=torch.float64))
    assert torch.equal(stats['entropy'], torch.zeros(2, 3, dtype=torch.float64))


def test_uniform_window_closed_form():
    # a query at the centre of a 3x3 window attending uniformly: MAD = (4·1 + 4·√2) / 9 tokens
    assert centred_window_distance(3) == pytest.approx(4 * (1 + math.sqrt(2)) / 9, abs=1e-12)
    k, stride = 5, 4
    keys = _grid(k, k)
    query = keys[k * k // 2][None]
    probs = torch.full((1, 1, 2, 1, k * k), 1 / k ** 2, dtype=torch.float64)
    stats = chunk_statistics(AttentionChunk(probs, query[None], keys[None]), stride=stride)
    offsets = torch.arange(k, dtype=torch.float64) - (k - 1) / 2
    expected = float(torch.sqrt(offsets[:, None] ** 2 + offsets[None] ** 2).mean()) * stride
    assert stats['mad'] / stats['count'] == pytest.approx(torch.full((1, 2), expected, dtype=torch.float64))
    assert stats['entropy'] / stats['count'] == pytest.approx(torch.ones(1, 2, dtype=torch.float64))
    # every query of a 2x2 window attending the whole window uniformly: mean pair distance (2 + √2) / 4
    keys = _grid(2, 2)
    probs = torch.full((1, 1, 1, 4, 4), 0.25, dtype=torch.float64)
    stats = chunk_statistics(AttentionChunk(probs, keys[None], keys[None]))
    assert float(stats['mad'] / stats['count']) == pytest.approx((2 + math.sqrt(2)) / 4, abs=1e-12)
    assert mean_grid_distance(2, 2) == pytest.approx((2 + math.sqrt(2)) / 4, abs=1e-12)
    # a radius-limited square clipped at the border: brute force over every (query, key) pair
    h, w, radius = 4, 6, 1
    pos = _grid(h, w)
    diff = (pos[:, None] - pos[None]).abs()
    near = (diff <= radius).all(-1)
    brute = float(torch.cdist(pos, pos)[near].mean())
    assert mean_grid_distance(h, w, radius) == pytest.approx(brute, abs=1e-12)
    assert mean_grid_distance(h, w, 10) == pytest.approx(mean_grid_distance(h, w), abs=1e-12)
    assert mean_grid_distance(200, 200, 1) == pytest.approx(centred_window_distance(3), rel=1e-2)


def test_masked_padded_keys_change_nothing():
    torch.manual_seed(0)
    pos = _grid(3, 3)
    probs = torch.softmax(torch.randn(2, 1, 2, 9, 9, dtype=torch.float64), -1)
    ref = chunk_statistics(AttentionChunk(probs, pos[None], pos[None]), stride=2)
    # pad to a 4x4 window: padded keys carry probability 0 (masked) and padded queries are not counted
    pos_p = _grid(4, 4)
    valid = (pos_p[:, 0] < 3) & (pos_p[:, 1] < 3)
    probs_p = torch.zeros(2, 1, 2, 16, 16, dtype=torch.float64)
    idx = valid.nonzero().squeeze(1)
    probs_p[..., idx[:, None], idx[None, :]] = probs
    probs_p[..., ~valid, :] = 1 / 16  # garbage rows of padded queries must be ignored
    padded = chunk_statistics(AttentionChunk(probs_p, pos_p[None], pos_p[None], None, valid[None], valid[None]),
                              stride=2)
    assert padded['count'] == ref['count'] == 9
    for key in ('mad', 'entropy'):
        torch.testing.assert_close(padded[key], ref[key])
    # unmasked padded keys (HRFormer pad_mask=False): renormalised over real keys, lost mass reported
    probs_leak = probs_p.clone()
    probs_leak[..., idx[:, None], idx[None, :]] *= 0.8
    probs_leak[..., idx[:, None], (~valid).nonzero().squeeze(1)[None, :]] = 0.2 / 7
    leak = chunk_statistics(AttentionChunk(probs_leak, pos_p[None], pos_p[None], None, valid[None], valid[None]),
                            stride=2)
    for key in ('mad', 'entropy'):
        torch.testing.assert_close(leak[key], ref[key])
    torch.testing.assert_close(leak['pad_mass'] / leak['count'], torch.full((2, 2), 0.2, dtype=torch.float64))


def test_gsa_keys_are_pooled_region_centres():
    from backbones.twins import GlobalSubsampledAttention
    torch.manual_seed(0)
    mod = GlobalSubsampledAttention(8, 2, sr_ratio=2).eval()
    x = torch.randn(1, 5 * 6, 8)
    chunks = list(_gsa_chunks(mod, x, (5, 6), 7, False))
    assert sum(c.probs.shape[3] for c in chunks) == 30
    k_pos = chunks[0].k_pos[0]
    # floor(5/2) x floor(6/2) regions of 2x2 tokens; region (r, c) centred at token coordinate (2r+1, 2c+1)
    expected = torch.tensor([[2 * r + 1.0, 2 * c + 1.0] for r in range(2) for c in range(3)])
    torch.testing.assert_close(k_pos, expected)
    # one-hot attention on one pooled region: MAD = distance between the query centre and that region centre
    q_pos = torch.tensor([[[0.5, 0.5]]])
    probs = torch.zeros(1, 1, 1, 1, 6)
    probs[..., 4] = 1  # region (1, 1), centre (3, 3)
    stats = chunk_statistics(AttentionChunk(probs, q_pos, k_pos[None]), stride=4)
    assert float(stats['mad']) == pytest.approx(4 * math.hypot(2.5, 2.5))
    assert float(stats['entropy']) == 0


def _micro(cls):
    arch = list(cls.ARCHS)[0]
    return cls(arch=cls.micro_arch(arch)).eval()


@pytest.mark.parametrize('name', sorted(BACKBONE_CLASSES))
def test_real_micro_backbone(name):
    torch.manual_seed(0)
    model = _micro(BACKBONE_CLASSES[name])
    images = torch.randn(3, 3, 65, 97)
    with AttentionLocality(model, chunk=5, verify=True) as analysis:
        analysis.run(images[:2])
        analysis.run(images[2:])
    reference = model(images)
    for module in model.modules():
        assert not module._forward_hooks, 'hooks must be removed on exit'
    torch.testing.assert_close(model(images), reference)
    rows = analysis.records()
    layers = find_attention_layers(model)
    assert len(rows) == sum(layer.heads for layer in layers)
    assert all(r['images'] == 3 for r in rows)
    diagonal = math.hypot(65, 97)
    for row in rows:
        assert 0.0 <= row['entropy_mean'] <= 1.0 + 1e-9
        assert row['mad_px_mean'] >= 0
        assert row['mad_norm_mean'] == pytest.approx(row['mad_px_mean'] / diagonal)
    summary = summarize(rows)
    assert [s['layer'] for s in summary] == [layer.name for layer in layers]
    if layers[0].kind != 'focal':
        # recomputed probabilities @ v → proj reproduce the modules' real outputs
        assert set(analysis.max_output_error) == {layer.name for layer in layers}
        assert max(analysis.max_output_error.values()) < 1e-5
    with AttentionLocality(model, chunk=5) as again:
        again.run(images[:2])
        again.run(images[2:])
    assert again.records() == rows  # deterministic
    with AttentionLocality(model, chunk=1000) as unchunked:
        unchunked.run(images)
    # chunking and batching change only float32 rounding (of the model's own forward, too)
    for row, ref in zip(unchunked.records(), rows):
        assert {k: v for k, v in row.items() if isinstance(v, str)} == {k: v for k, v in ref.items()
                                                                      if isinstance(v, str)}
        numeric = [k for k, v in ref.items() if isinstance(v, float)]
        assert [row[k] for k in numeric] == pytest.approx([ref[k] for k in numeric], rel=1e-5, abs=1e-6)


def test_hrformer_padding_excluded_and_pad_mask_respected():
    from backbones.hrformer import HRFormer
    torch.manual_seed(0)
    images = torch.randn(1, 3, 50, 70)
    results = {}
    for pad_mask in (False, True):
        torch.manual_seed(0)
        model = HRFormer(arch=HRFormer.micro_arch('small'), pad_mask=pad_mask).eval()
        with AttentionLocality(model, chunk=3, verify=True) as analysis:
            analysis.run(images)
        assert max(analysis.max_output_error.values()) < 1e-5
        results[pad_mask] = analysis.records()
    assert all(r['pad_mass_mean'] == pytest.approx(0, abs=1e-6) for r in results[True])  # masked: float32 sums
    assert max(r['pad_mass_mean'] for r in results[False]) > 0.05  # official: padded keys are attended


def test_focalnet_effective_extent_is_within_level_extents():
    from backbones.focalnet import FocalNet
    torch.manual_seed(0)
    model = _micro(FocalNet)
    with AttentionLocality(model) as analysis:
        analysis.run(torch.randn(2, 3, 64, 64))
    for layer in summarize(analysis.records()):
        assert layer['mad_px_min'] <= layer['effective_extent_px'] <= layer['mad_px_max']
    shares = {}
    for row in analysis.records():
        shares.setdefault(row['layer'], 0.0)
        shares[row['layer']] += row['gate_share_mean']
    assert all(s == pytest.approx(1.0) for s in shares.values())


def _tiny_image_folder(folder, count=2, size=(40, 48)):
    import numpy as np
    from PIL import Image
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f'{i}.png')
    return folder


def test_cli_single_and_compare(tmp_path):
    import csv
    import importlib.util
    import json
    from backbones.twins import SVT
    from backbones.weights import load_pretrained
    spec = importlib.util.spec_from_file_location(
        'attention_locality', Path(__file__).resolve().parents[1] / 'tools' / 'analysis' / 'attention_locality.py')
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    images = _tiny_image_folder(tmp_path / 'images')
    out = tmp_path / 'single'
    result = cli.main(['twins-svt-small', '--images', str(images), '--size', '64', '64', '--out', str(out),
                       '--batch-size', '1'])
    with open(out / 'heads.csv') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(layer.heads for layer in find_attention_layers(SVT('small')))
    assert {'mad_px_mean', 'mad_norm_mean', 'entropy_mean', 'mad_px_std'} <= set(rows[0])
    assert json.loads((out / 'heads.json').read_text())['meta']['images'] == 2
    assert {p.name for p in out.glob('*.png')} == {'mad_vs_depth.png', 'entropy_vs_mad.png'}
    # compare: random weights vs a trained-style checkpoint (mmengine layout, backbone. prefix)
    torch.manual_seed(1)
    other = SVT('small')
    other.init_weights()
    ckpt = tmp_path / 'epoch_1.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in other.state_dict().items()}}, ckpt)
    load_pretrained(SVT('small'), str(ckpt))  # the file itself loads
    compared = cli.main(['twins-svt-small', '--compare', 'random', str(ckpt), '--images', str(images),
                         '--size', '64', '64', '--out', str(tmp_path / 'cmp'), '--no-plots'])
    diff = compared['compare']
    assert [r['layer'] for r in diff] == [s['layer'] for s in summarize(result['heads'])]
    for row, single in zip(diff, summarize(result['heads'])):
        assert row['mad_px_mean_a'] == pytest.approx(single['mad_px_mean'])  # A = the same random run
        assert row['mad_px_mean_diff'] == pytest.approx(row['mad_px_mean_b'] - row['mad_px_mean_a'])
    assert any(abs(r['mad_px_mean_diff']) > 1e-6 for r in diff)


def test_s3_padding_and_shift_regions_excluded():
    """S3 masks padded keys (no padded mass) and keys of other shifted regions (MAD within a window)."""
    from backbones.s3 import S3
    torch.manual_seed(0)
    model = S3(arch=S3.micro_arch('tiny')).eval()
    with AttentionLocality(model, chunk=7, verify=True) as analysis:
        analysis.run(torch.randn(1, 3, 65, 97))      # stage 0: 17x25 tokens, 7x7 windows, padded and shifted
    assert max(analysis.max_output_error.values()) < 1e-5
    rows = analysis.records()
    assert all(r['pad_mass_mean'] == pytest.approx(0, abs=1e-6) for r in rows)
    assert {layer.kind for layer in find_attention_layers(model)} == {'s3-window'}
    for row in rows:     # windows of at most 7x7 here: no key farther than a window apart
        assert row['mad_px_mean'] <= math.hypot(6, 6) * row['stride']
