"""Slimmable backbones (Scala, `backbones.slimming`): every family, micro widths, odd input sizes."""
import json
import random
from pathlib import Path

import pytest
import torch

import backbones
from backbones import slimming
from backbones._base import BACKBONE_CLASSES

# (class name, arch) covering each family's code paths: FocalNet post-LN/layerscale/conv stem and the
# isotropic model, both Twins, HRFormer (BatchNorm), S3.
CASES = [('FocalNet', 'tiny-srf'), ('FocalNet', 'large-fl4'), ('FocalNet', 'tiny-iso'), ('PCPVT', 'small'),
         ('SVT', 'small'), ('HRFormer', 'small'), ('S3', 'tiny')]
IDS = [f'{c}-{a}' for c, a in CASES]
SIZE = (37, 53)        # odd, not a multiple of any window or patch


def build(name: str, arch: str, seed: int = 0, **kwargs) -> backbones.DenseBackbone:
    cls = BACKBONE_CLASSES[name]
    torch.manual_seed(seed)
    return cls(arch=cls.micro_arch(arch), **kwargs)


def image(dtype=torch.float32, n=2) -> torch.Tensor:
    return torch.randn(n, 3, *SIZE, generator=torch.Generator().manual_seed(1), dtype=dtype)


def test_every_family_declares_channel_groups():
    """A registered family without `slimming_spec` would not take slimmable= (S3 included)."""
    assert 'S3' in BACKBONE_CLASSES
    missing = [n for n, c in BACKBONE_CLASSES.items() if not hasattr(c, 'slimming_spec')]
    assert not missing, f'families without slimming_spec: {missing}'


@pytest.mark.parametrize('name,arch', CASES, ids=IDS)
def test_width_one_is_the_ordinary_backbone(name, arch):
    plain = build(name, arch).eval()
    slim = build(name, arch, seed=1, slimmable=dict()).eval()
    slim.load_state_dict(plain.state_dict())          # an ordinary checkpoint loads as the r = 1 net
    x = image()
    with torch.no_grad():
        expected = plain(x)
        assert all(torch.equal(a, b) for a, b in zip(expected, slim(x)))
        with backbones.at_width(slim, 0.5):
            narrow = slim(x)
        assert backbones.get_width(slim) == 1.0
        assert all(torch.equal(a, b) for a, b in zip(expected, slim(x)))   # back at 1: exactly again
    assert [o.shape for o in narrow] == [o.shape for o in expected]     # full channel count at any width
    assert not any(torch.equal(a, b) for a, b in zip(expected, narrow))


@pytest.mark.parametrize('name,arch', CASES, ids=IDS)
def test_export_equals_the_slice_at_every_trained_width(name, arch):
    model = build(name, arch, slimmable=dict()).double()
    if name == 'HRFormer':        # distinct per-width BN statistics, so that the export must pick the right row
        model.train()
        for w in backbones.trained_widths(model):
            with backbones.at_width(model, w), torch.no_grad():
                model(image(torch.float64))
    model.eval()
    x = image(torch.float64)
    full_params = sum(p.numel() for p in model.parameters())
    previous = 0
    for w in backbones.trained_widths(model):
        with backbones.at_width(model, w), torch.no_grad():
            expected = model(x)
        narrow = backbones.export_width(model, w).eval()
        assert type(narrow) is type(model) and not slimming.is_slimmable(narrow)
        with torch.no_grad():
            got = narrow(x)
        cmap = backbones.channel_map(model, w)
        assert [o.shape[1] for o in got] == [sum(b - a for a, b in r) for _, r in cmap]
        for e, g in zip(expected, backbones.pad_to_full(got, cmap)):
            torch.testing.assert_close(g, e, rtol=0, atol=1e-12)      # BN folding in eval: float64 rounding
        params = sum(p.numel() for p in narrow.parameters())
        assert previous <= params <= full_params
        previous = params
    assert params == full_params


def test_export_arch_is_the_narrow_arch():
    model = build('PCPVT', 'small', slimmable=dict())
    narrow = backbones.export_width(model, 0.5)
    assert narrow.arch_cfg['embed_dims'] == [8, 16, 24, 32]
    assert narrow.arch_cfg['num_heads'] == model.arch_cfg['num_heads']        # heads fixed, head dim shrinks
    assert narrow.arch_cfg['qk_scale'] == pytest.approx(16 ** -0.5)           # the full width's scale
    assert narrow.feature_info[0]['channels'] == 8
    hr = backbones.export_width(build('HRFormer', 'small', slimmable=dict()), 0.25)
    assert hr.arch_cfg['stage4']['num_channels'] == [2, 4, 6, 8]
    assert hr.arch_cfg['stage1']['num_channels'] == [2] and hr.conv1.out_channels == 16   # stem: 64 → 16
    fn = backbones.export_width(build('FocalNet', 'tiny-srf', slimmable=dict()), 0.5)
    assert fn.arch_cfg['embed_dim'] == 4


def test_isolated_activation_front_for_smallest_and_full_back_otherwise():
    model = build('PCPVT', 'small', slimmable=dict())
    weight = model.patch_embeds[0].proj.weight.detach()               # (16, 3, 4, 4)
    q = model.blocks[1][0].attn.q.weight.detach()                     # stage 1: 32 = 2 heads x 16
    for w, front in ((0.25, True), (0.3125, False), (0.5, False), (0.9375, False), (1.0, True)):
        narrow = backbones.export_width(model, w)
        c = narrow.arch_cfg['embed_dims'][0]
        expected = weight[:c] if front else weight[-c:]
        assert torch.equal(narrow.patch_embeds[0].proj.weight, expected), w
        c1, hd = narrow.arch_cfg['embed_dims'][1], narrow.arch_cfg['embed_dims'][1] // 2
        rows = [h * 16 + (k if front else 16 - hd + k) for h in range(2) for k in range(hd)]   # per head
        cols = range(c1) if front else range(32 - c1, 32)
        assert torch.equal(narrow.blocks[1][0].attn.q.weight, q[rows][:, list(cols)]), w
        ranges = backbones.channel_map(model, w)[0][1]
        assert ranges == [(0, c) if front else (16 - c, 16)]
    # the zero channels of the padded outputs are where the rule says
    x = image()
    with backbones.at_width(model, 0.5), torch.no_grad():
        out = model(x)[0]
    assert out[:, :8].abs().sum() == 0 and out[:, 8:].abs().sum() > 0


def test_gradients_reach_only_the_active_slice_and_with_cp_works():
    model = build('FocalNet', 'tiny-srf', slimmable=dict(), with_cp=True).train()
    backbones.set_width(model, 0.5)
    sum(o.square().mean() for o in model(image())).backward()
    grad = model.patch_embed.proj.weight.grad                       # 8 channels, back half active
    assert grad[4:].abs().sum() > 0 and grad[:4].abs().sum() == 0
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_batchnorm_statistics_are_kept_per_width():
    model = build('HRFormer', 'small', slimmable=dict()).train()
    bn = model.stage2[0].branches[0][0].ffn.norm1
    full_before, rows_before = bn.running_mean.clone(), bn.slim_running_mean.clone()
    widths = backbones.trained_widths(model)
    row = widths.index(0.5)
    with backbones.at_width(model, 0.5):
        model(image())
    assert torch.equal(bn.running_mean, full_before)                       # r = 1 statistics untouched
    changed = (bn.slim_running_mean != rows_before).any(1)
    assert changed.tolist() == [i == row for i in range(len(widths) - 1)]  # only the 0.5 row moved
    assert bn.slim_num_batches_tracked[row] == 1 and bn.num_batches_tracked == 0
    model(image())
    assert not torch.equal(bn.running_mean, full_before)
    # saved and restored with the model; an ordinary checkpoint fills every width from the full statistics
    sd = model.state_dict()
    assert 'stage2.0.branches.0.0.ffn.norm1.slim_running_mean' in sd
    fresh = build('HRFormer', 'small', slimmable=dict())
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.stage2[0].branches[0][0].ffn.norm1.slim_running_mean, bn.slim_running_mean)
    plain = {k: v for k, v in sd.items() if '.slim_' not in k}
    report = backbones.load_pretrained(fresh, plain)
    assert report.loaded == len(plain)
    loaded = fresh.stage2[0].branches[0][0].ffn.norm1
    assert torch.equal(loaded.slim_running_mean, bn.running_mean.expand_as(loaded.slim_running_mean))


@pytest.mark.parametrize('width', [0, -0.25, 1.5, 0.3, True, '0.5', float('nan')])
def test_bad_widths_raise_clear_errors(width):
    model = build('FocalNet', 'tiny-srf', slimmable=dict())
    with pytest.raises(ValueError, match='width'):
        backbones.set_width(model, width)
    with pytest.raises(ValueError, match='width'):
        backbones.export_width(model, width)
    assert backbones.get_width(model) == 1.0


def test_off_grid_widths_and_bad_configurations():
    model = build('FocalNet', 'tiny-srf', slimmable=dict(off_grid=True))
    assert backbones.set_width(model, 0.3) == 0.3
    with pytest.raises(ValueError, match='width'):
        backbones.set_width(model, 0.2)                                    # below the smallest trained width
    with pytest.raises(ValueError, match='off_grid'):
        build('HRFormer', 'small', slimmable=dict(off_grid=True))         # BN statistics exist per width only
    with pytest.raises(ValueError, match='unknown keys'):
        build('SVT', 'small', slimmable=dict(ratio=0.5))
    with pytest.raises(ValueError, match='never reaches 1'):
        build('SVT', 'small', slimmable=dict(min_width=0.3, step=0.25))
    with pytest.raises(ValueError, match='slimmable'):
        backbones.set_width(build('SVT', 'small'), 0.5)                    # not built slimmable
    grid = backbones.trained_widths(build('SVT', 'small', slimmable=dict(widths=[1.0, 0.5, 0.25])))
    assert grid == [0.25, 0.5, 1.0]


def test_create_backbone_takes_slimmable():
    model = backbones.create_backbone('twins-svt-small', slimmable=dict(step=0.25))
    assert backbones.trained_widths(model) == [0.25, 0.5, 0.75, 1.0]


def test_scala_step_widths_come_from_both_halves():
    model = build('FocalNet', 'tiny-srf', slimmable=dict())
    rng = random.Random(0)
    for _ in range(20):
        full, upper, lower, smallest = slimming.scala_widths(model, rng)
        assert full == 1.0 and smallest == 0.25
        assert 0.625 <= upper <= 0.9375 and 0.3125 <= lower <= 0.5625


def _fpn_state(model, prefix='neck.', out=8):
    """FPN-like neck weights reading every output (lateral 1x1) plus an 'on_input' extra conv on the last."""
    g = torch.Generator().manual_seed(2)
    state = {f'backbone.{k}': v for k, v in model.state_dict().items()}
    for i, c in enumerate(model.out_channels):
        state[f'{prefix}lateral_convs.{i}.conv.weight'] = torch.randn(out, c, 1, 1, generator=g)
        state[f'{prefix}lateral_convs.{i}.conv.bias'] = torch.randn(out, generator=g)
    state[f'{prefix}fpn_convs.{len(model.out_channels)}.conv.weight'] = torch.randn(
        out, model.out_channels[-1], 3, 3, generator=g)
    return state


def test_export_model_slices_the_neck_inputs_exactly():
    arch = backbones.FocalNet.micro_arch('tiny-srf')
    model = build('FocalNet', 'tiny-srf', slimmable=dict()).eval()
    cfg = dict(type='RetinaNet', backbone=dict(type='backbones.FocalNet', arch=arch, slimmable=dict(),
                                               drop_path_rate=0.0, init_cfg=None),
               neck=dict(type='FPN', in_channels=model.out_channels, out_channels=8, start_level=1,
                         add_extra_convs='on_input', num_outs=5))
    state = _fpn_state(model)
    state = {k.replace('lateral_convs.1.', 'lateral_convs.0.').replace('lateral_convs.2.', 'lateral_convs.1.')
             .replace('lateral_convs.3.', 'lateral_convs.2.').replace('fpn_convs.4.', 'fpn_convs.3.'): v
             for k, v in state.items() if 'lateral_convs.0.' not in k}          # start_level=1: outputs 1..3
    x = image()
    for width in (0.25, 0.5):
        new_cfg, new_state, narrow = slimming.export_model(cfg, state, width)
        assert 'slimmable' not in new_cfg['backbone'] and new_cfg['backbone']['arch']['embed_dim'] == width * 8
        assert new_cfg['neck']['in_channels'] == narrow.out_channels
        rebuilt = backbones.FocalNet(**{k: v for k, v in new_cfg['backbone'].items() if k != 'type'}).eval()
        rebuilt.load_state_dict({k[9:]: v for k, v in new_state.items() if k.startswith('backbone.')})
        with torch.no_grad(), backbones.at_width(model, width):
            padded = model(x)
        with torch.no_grad():
            small = rebuilt(x)
        for k in range(3):
            key = f'neck.lateral_convs.{k}.conv.weight'
            torch.testing.assert_close(torch.nn.functional.conv2d(small[k + 1], new_state[key]),
                                       torch.nn.functional.conv2d(padded[k + 1], state[key]), rtol=0, atol=1e-5)
        key = 'neck.fpn_convs.3.conv.weight'
        assert new_state[key].shape[1] == narrow.out_channels[-1]
        torch.testing.assert_close(torch.nn.functional.conv2d(small[-1], new_state[key], padding=1),
                                   torch.nn.functional.conv2d(padded[-1], state[key], padding=1), rtol=0, atol=1e-5)


def test_export_width_command_writes_a_standalone_pose_model(tmp_path):
    from mmengine.config import Config
    from backbones.cli import main
    arch = backbones.HRFormer.micro_arch('small')
    model = build('HRFormer', 'small', slimmable=dict(step=0.25), out_indices=(0,)).eval()
    g = torch.Generator().manual_seed(3)
    state = {f'backbone.{k}': v for k, v in model.state_dict().items()}
    state['head.final_layer.weight'] = torch.randn(3, model.out_channels[0], 1, 1, generator=g)
    state['head.final_layer.bias'] = torch.randn(3, generator=g)
    (tmp_path / 'pose.py').write_text(
        f"model = dict(type='TopdownPoseEstimator', backbone=dict(type='backbones.HRFormer', arch={arch!r}, "
        f"out_indices=(0,), slimmable=dict(step=0.25), init_cfg=None), "
        f"head=dict(type='HeatmapHead', in_channels={model.out_channels[0]}, out_channels=3, "
        f"deconv_out_channels=None))\n")
    torch.save({'state_dict': state}, tmp_path / 'pose.pth')
    assert main(['export-width', str(tmp_path / 'pose.py'), str(tmp_path / 'pose.pth'), '--width', '0.5',
                 '--out', str(tmp_path / 'out')]) == 0
    cfg = Config.fromfile(str(tmp_path / 'out' / 'pose_width-0.5.py'))
    saved = torch.load(cfg.load_from, weights_only=True)['state_dict']
    kwargs = {k: v for k, v in cfg.model.backbone.items() if k != 'type'}
    narrow = backbones.HRFormer(**kwargs).eval()
    narrow.load_state_dict({k[9:]: v for k, v in saved.items() if k.startswith('backbone.')})
    assert cfg.model.head.in_channels == narrow.out_channels[0] == 4
    x = image()
    with torch.no_grad(), backbones.at_width(model, 0.5):
        expected = torch.nn.functional.conv2d(model(x)[0], state['head.final_layer.weight'])
    with torch.no_grad():
        got = torch.nn.functional.conv2d(narrow(x)[0], saved['head.final_layer.weight'])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def _scala_model(warmup_iters=1, backbone_kw=None, **scala_kw):
    from mmengine.model import BaseModel
    from backbones.registry import ScalaModel

    class TinyClassifier(BaseModel):
        """A stand-in task model: slimmable backbone, a pooled linear head, cross-entropy label loss."""

        def __init__(self):
            super().__init__()
            self.backbone = build('FocalNet', 'tiny-srf', **(backbone_kw or dict(slimmable=dict())))
            self.head = torch.nn.Linear(self.backbone.out_channels[-1], 5)

        def loss(self, inputs, data_samples):
            logits = self.head(self.backbone(inputs)[-1].mean((2, 3)))
            return dict(loss_cls=torch.nn.functional.cross_entropy(logits, data_samples))

        def forward(self, inputs, data_samples=None, mode='tensor'):
            if mode == 'loss':
                return self.loss(inputs, data_samples)
            logits = self.head(self.backbone(inputs)[-1].mean((2, 3)))
            return list(logits) if mode == 'predict' else logits

    return ScalaModel(TinyClassifier(), warmup_iters=warmup_iters, distill='softmax', **scala_kw)


@pytest.mark.parametrize('teacher', ['progressive', 'full'])
def test_scala_training_step(monkeypatch, teacher):
    """Warm-up: one pass at width 1. Then four passes (1, upper half, lower half, smallest), each smaller
    one distilled from the previous pass's detached head output ('progressive') or from the first (width 1)
    pass's ('full'), and ONE optimizer step per iteration."""
    from mmengine.optim import OptimWrapper
    model = _scala_model(teacher=teacher)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    wrapper = OptimWrapper(optimizer)
    calls = dict(step=0, backward=0)
    pairs = []

    def counted(name, fn):
        def call(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return call

    def recorded(student, teacher, kind, distill=slimming.distillation_loss):
        pairs.append((student, teacher))
        return distill(student, teacher, kind)

    monkeypatch.setattr(optimizer, 'step', counted('step', optimizer.step))
    monkeypatch.setattr(wrapper, 'backward', counted('backward', wrapper.backward))
    monkeypatch.setattr(slimming, 'distillation_loss', recorded)
    widths = []
    set_width = slimming.set_width
    monkeypatch.setattr(slimming, 'set_width', lambda m, w, **kw: (widths.append(w), set_width(m, w, **kw))[1])
    data = dict(inputs=image(), data_samples=torch.tensor([1, 3]))

    log = model.train_step(data, wrapper)
    assert calls == dict(step=1, backward=1) and not pairs and widths == [1.0, 1.0]
    assert set(log) == {'loss', 'loss_full', 'loss_cls'}
    widths.clear()
    before = model.model.backbone.patch_embed.proj.weight.detach().clone()
    log = model.train_step(data, wrapper)
    assert calls == dict(step=2, backward=5)
    assert len(pairs) == 3
    for student, taught_by in pairs:
        assert student.requires_grad and not taught_by.requires_grad and taught_by.grad_fn is None
    if teacher == 'progressive':                                   # the previous pass teaches
        for (student, _), (_, taught_by) in zip(pairs, pairs[1:]):
            assert torch.equal(student.detach(), taught_by)
    else:                                                          # the width-1 pass teaches every other
        assert all(taught_by is pairs[0][1] for _, taught_by in pairs)
        assert not torch.equal(pairs[0][0].detach(), pairs[1][1])
    assert widths[0] == 1.0 and 0.625 <= widths[1] < 1 and 0.25 < widths[2] < 0.625 and widths[3] == 0.25
    assert widths[4] == 1.0                                        # back to the validation width
    roles = ('full', 'upper', 'lower', 'smallest')
    assert set(log) == {'loss', 'loss_cls'} | {f'loss_{r}' for r in roles} | {f'loss_kd_{r}' for r in roles[1:]}
    assert log['loss'] == sum(log[f'loss_{r}'] for r in roles)
    assert not torch.equal(before, model.model.backbone.patch_embed.proj.weight)
    assert backbones.get_width(model.model.backbone) == 1.0


def _scala_model_with_head_bn(affine: bool = False):
    """_scala_model with a BatchNorm1d in front of the head's linear layer, tracked per width (`affine`:
    its weight and bias too)."""
    model = _scala_model(warmup_iters=0, backbone_kw=dict(slimmable=dict(), drop_path_rate=0.0),
                         norm_affine='per_width' if affine else 'shared')
    head_bn = torch.nn.BatchNorm1d(model.model.backbone.out_channels[-1])
    model.model.head = torch.nn.Sequential(head_bn, model.model.head)
    assert slimming.track_norms(model.model.backbone, list(model.model.head.modules()), affine=affine) == 1
    return model, head_bn


def _exported_head_bn(backbone, head_bn, width: float) -> dict:
    """The state that export-width writes for the head BatchNorm (as `head.0`) at `width`: no per-width rows."""
    state = {f'head.0.{k}': v for k, v in head_bn.state_dict().items()}
    exported = slimming._downstream_statistics(state, slimming._downstream_row(
        slimming._sub_network_state(backbone, width)))
    assert not any('slim_' in k for k in exported)
    return exported


def _rows_trained_by_one_step(model, lr: float) -> set[int]:
    """One Scala training step (SGD at `lr`); the per-width rows (indices in the grid) of the widths below 1
    it trained."""
    from mmengine.optim import OptimWrapper
    widths = []
    draw = slimming.scala_widths
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(slimming, 'scala_widths', lambda m, rng: widths.extend(draw(m, rng)) or widths)
        model.train_step(dict(inputs=image(), data_samples=torch.tensor([1, 3])),
                         OptimWrapper(torch.optim.SGD(model.parameters(), lr=lr)))
    grid = slimming.trained_widths(model.model.backbone)
    return {grid.index(w) for w in widths if w != 1.0}


def test_scala_keeps_head_batchnorm_statistics_per_width():
    """The neck / head BatchNorms of a Scala model keep running statistics per trained width: a training
    pass at width r updates r's row only (width 1: the ordinary statistics), evaluation at r reads that row,
    and export-width writes that row as the exported head's statistics."""
    model, head_bn = _scala_model_with_head_bn()
    backbone = model.model.backbone
    assert slimming.track_norms(backbone, [head_bn]) == 0                       # once
    grid = slimming.trained_widths(backbone)
    rows = head_bn.slim_running_mean.clone()
    assert rows.shape == (len(grid) - 1, head_bn.num_features)
    full_before = head_bn.running_mean.clone()
    trained = _rows_trained_by_one_step(model, lr=0.0)
    assert len(trained) == 3 and not torch.equal(head_bn.running_mean, full_before)
    for i in range(len(grid) - 1):
        assert torch.equal(head_bn.slim_running_mean[i], rows[i]) != (i in trained)
    seen, full = [], head_bn._buffers['running_mean']
    head_bn.register_forward_pre_hook(lambda m, a: seen.append(m.running_mean.clone()))
    model.eval()
    for width in (0.25, 1.0):
        with torch.no_grad(), slimming.at_width(backbone, width):
            model.model(image())
    assert torch.equal(seen[0], head_bn.slim_running_mean[0]) and torch.equal(seen[1], head_bn.running_mean)
    assert head_bn._buffers['running_mean'] is full                           # restored after each forward

    exported = _exported_head_bn(backbone, head_bn, 0.25)
    assert torch.equal(exported['head.0.running_mean'], head_bn.slim_running_mean[0])
    assert torch.equal(exported['head.0.running_var'], head_bn.slim_running_var[0])
    at_one = _exported_head_bn(backbone, head_bn, 1.0)
    assert torch.equal(at_one['head.0.running_mean'], head_bn.running_mean)


def test_per_width_norm_affine_trains_reads_exports_and_loads_per_width():
    """track_norms(affine=True) (ScalaModel(norm_affine='per_width')): a weight and bias row per trained width
    besides the statistics; a training pass at width r updates r's row (width 1: the ordinary ones); an
    evaluation at r normalises with r's row; export-width writes that row; an ordinary checkpoint fills
    every row from the ordinary weight and bias."""
    model, head_bn = _scala_model_with_head_bn(affine=True)
    backbone = model.model.backbone
    grid = slimming.trained_widths(backbone)
    assert isinstance(head_bn.slim_weight, torch.nn.Parameter) and head_bn.slim_bias.shape == (len(grid) - 1,
                                                                                             head_bn.num_features)
    names = {n for n, _ in model.named_parameters()}
    assert {'model.head.0.slim_weight', 'model.head.0.slim_bias', 'model.head.0.weight'} <= names
    rows, full = head_bn.slim_weight.detach().clone(), head_bn.weight.detach().clone()
    trained = _rows_trained_by_one_step(model, lr=0.5)
    assert len(trained) == 3 and not torch.equal(head_bn.weight, full)
    for i in range(len(grid) - 1):
        assert torch.equal(head_bn.slim_weight[i], rows[i]) != (i in trained)
    assert isinstance(head_bn._parameters['weight'], torch.nn.Parameter)           # restored after each pass

    model.eval()
    with torch.no_grad():
        head_bn.slim_weight[0].uniform_(0.5, 2.0)
        head_bn.slim_bias[0].normal_()
        with slimming.at_width(backbone, 0.25):
            feats = backbone(image())[-1].mean((2, 3))
            got = head_bn(feats)
    expected = torch.nn.functional.batch_norm(feats, head_bn.slim_running_mean[0], head_bn.slim_running_var[0],
                                              head_bn.slim_weight[0], head_bn.slim_bias[0], False, 0.0, head_bn.eps)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)

    exported = _exported_head_bn(backbone, head_bn, 0.25)
    assert torch.equal(exported['head.0.weight'], head_bn.slim_weight[0])
    assert torch.equal(exported['head.0.bias'], head_bn.slim_bias[0])

    ordinary = torch.nn.BatchNorm1d(head_bn.num_features)
    torch.nn.init.uniform_(ordinary.weight)
    head_bn.load_state_dict(ordinary.state_dict())
    assert torch.equal(head_bn.slim_weight, ordinary.weight.detach().expand_as(head_bn.slim_weight))
    with pytest.raises(ValueError, match="norm_affine='private'"):
        _scala_model(norm_affine='private')


def test_scala_calibration_re_estimates_the_statistics_of_each_width():
    """calibrate_scala_norms: per width, the rows it uses are reset and re-estimated as the cumulative
    average over the given training batches (here one: exactly that batch's statistics); momentum and
    training mode come back; other widths' rows are untouched."""
    from backbones.registry import calibrate_scala_norms
    model, head_bn = _scala_model_with_head_bn()
    model.eval()
    backbone = model.model.backbone
    grid = slimming.trained_widths(backbone)
    before = head_bn.slim_running_mean.clone()
    batch = dict(inputs=image(), data_samples=torch.tensor([1, 3]))
    assert calibrate_scala_norms(model, [batch, batch], 1, [0.25, 1.0]) == 1
    for width, stats in ((0.25, head_bn.slim_running_mean[0]), (1.0, head_bn.running_mean)):
        with torch.no_grad(), slimming.at_width(backbone, width):
            pooled = backbone(image())[-1].mean((2, 3))
        torch.testing.assert_close(stats, pooled.mean(0), rtol=1e-5, atol=1e-6)
    assert torch.equal(head_bn.slim_running_mean[1:], before[1:]) and grid[1] != 0.25
    assert head_bn.momentum == 0.1 and not model.training
    assert calibrate_scala_norms(model, [batch], 0, [0.25]) == 0


def test_scala_model_refuses_an_unknown_teacher():
    with pytest.raises(ValueError, match="teacher='next'.*progressive"):
        _scala_model(teacher='next')


def test_scala_loss_weights_scale_the_gradient_of_a_role():
    """loss_weights=dict(smallest=w): the smallest pass's loss (label + distillation) enters the one
    accumulated gradient w times; the other passes are unchanged, so the gradients are affine in w."""
    from mmengine.optim import OptimWrapper
    data = dict(inputs=image(), data_samples=torch.tensor([1, 3]))

    def gradient(**kw):
        torch.manual_seed(0)
        model = _scala_model(warmup_iters=0, backbone_kw=dict(slimmable=dict(), drop_path_rate=0.0), **kw)
        wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.0))
        grads = []
        wrapper.step = lambda **_: grads.extend(p.grad.clone() for p in model.parameters() if p.grad is not None)
        model.train_step(data, wrapper)
        return torch.cat([g.flatten() for g in grads])
    one, two, three = gradient(), gradient(loss_weights=dict(smallest=2.0)), gradient(loss_weights={'smallest': 3})
    assert not torch.allclose(one, two)
    torch.testing.assert_close(three - one, 2 * (two - one), rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(gradient(loss_weights=dict(full=1.0)), one, rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown roles \\['tiny'\\]"):
        _scala_model(loss_weights=dict(tiny=2.0))
    with pytest.raises(ValueError, match='> 0'):
        _scala_model(loss_weights=dict(smallest=0))


def test_scala_wrapper_arguments_are_the_scala_model_arguments():
    """export-width strips exactly ScalaModel's own arguments from a Scala config to get the task model."""
    import inspect
    from backbones.registry import ScalaModel
    own = set(inspect.signature(ScalaModel.__init__).parameters) - {'self', 'task_cfg'}
    assert own | {'type'} == set(slimming.SCALA_WRAPPER_ARGS)


def test_scala_training_draws_rank_ratios(monkeypatch):
    """With a low-rank supernet and rank_ratios, the passes below width 1 draw a rank ratio per stage from
    those values; width 1 keeps the built ranks; without lowrank= the option is refused."""
    from mmengine.optim import OptimWrapper
    model = _scala_model(warmup_iters=0, backbone_kw=dict(slimmable=dict(), lowrank=dict(ratio=1.0)),
                         rank_ratios=[0.5, 0.75, 1.0], seed=3)
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    calls = []
    set_width = slimming.set_width
    monkeypatch.setattr(slimming, 'set_width',
                        lambda m, w, **kw: (calls.append((w, kw.get('ranks'))), set_width(m, w, **kw))[1])
    data = dict(inputs=image(), data_samples=torch.tensor([1, 3]))
    drawn = []
    for _ in range(3):
        calls.clear()
        log = model.train_step(data, wrapper)
        assert torch.isfinite(log['loss'])
        assert calls[0] == (1.0, None) and calls[-1][1] is None           # full pass, then back to val width
        for width, ranks in calls[1:4]:
            assert width < 1 and len(ranks) == 4 and set(ranks) <= {0.5, 0.75, 1.0}
            drawn += ranks
    assert len(set(drawn)) > 1
    assert slimming.get_ranks(model.model.backbone) is None
    with pytest.raises(ValueError, match='lowrank'):
        _scala_model(rank_ratios=[0.5])


def test_adapters_are_refused_below_width_one():
    model = build('SVT', 'small', slimmable=dict(), adapter=dict(type='ARC', bottleneck=4))
    with pytest.raises(NotImplementedError, match='adapter'):
        backbones.set_width(model, 0.5)
    assert backbones.set_width(model, 1.0) == 1.0


def test_scala_validation_loop_reports_every_width():
    from types import SimpleNamespace
    from mmengine.evaluator import BaseMetric, Evaluator
    from backbones.registry import ScalaValLoop
    model = _scala_model()
    backbone = model.model.backbone

    class WidthSeen(BaseMetric):
        """Records the backbone width each validation batch ran at."""
        def process(self, data_batch, data_samples):
            self.results.append(backbones.get_width(backbone))

        def compute_metrics(self, results):
            return dict(width=sum(results) / len(results), batches=len(results))

    batches = [dict(inputs=image(), data_samples=torch.tensor([0, 1]))] * 2
    hooks = []
    runner = SimpleNamespace(model=model, call_hook=lambda name, **kw: hooks.append(name))
    loop = ScalaValLoop(runner, _Batches(batches), Evaluator(WidthSeen()), widths=[0.25, 0.5, 1.0])
    metrics = loop.run()
    assert {k: v for k, v in metrics.items() if k.startswith('width')} == {
        'width@0.25': 0.25, 'width@0.5': 0.5, 'width@1': 1.0, 'width': 1.0}
    assert hooks.count('after_val_epoch') == 1 and backbones.get_width(backbone) == 1.0


class _Batches(list):
    """A list of batches that looks like a DataLoader to ValLoop (`len(dataloader.dataset)`)."""
    @property
    def dataset(self):
        return self


def test_hrformer_with_official_stage1_exports_exactly():
    """Official variants have 64 bottleneck planes (256 out) after a 64-channel stem: were the stem kept,
    4·16 = 64 at r = 0.25 would leave the narrow model without stage 1's projection shortcut."""
    arch = backbones.HRFormer.micro_arch('small')
    arch['stage1'] = dict(arch['stage1'], num_channels=[64])
    torch.manual_seed(0)
    model = backbones.HRFormer(arch=arch, slimmable=dict(widths=[0.25, 0.5, 1.0])).double().eval()
    x = image(torch.float64)
    for w in (0.25, 0.5):
        narrow = backbones.export_width(model, w).eval()
        with backbones.at_width(model, w), torch.no_grad():
            expected = model(x)
        with torch.no_grad():
            got = backbones.pad_to_full(narrow(x), backbones.channel_map(model, w))
        for e, g in zip(expected, got):
            torch.testing.assert_close(g, e, rtol=0, atol=1e-12)


# ---- export_model: mmseg decode heads reading the backbone outputs directly -----------------------------
def _segmentor(cfg: dict):
    pytest.importorskip('mmseg')
    import backbones.registry  # noqa: F401
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmseg'):   # whatever scope earlier tests left current
        return MODELS.build(cfg).double().eval()


def _randomize_bn(model, seed=4):
    """Non-trivial BatchNorm statistics in the heads, so that a wrongly sliced input would show."""
    g = torch.Generator().manual_seed(seed)
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d) and not name.startswith('backbone.'):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g, dtype=m.running_mean.dtype) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g, dtype=m.running_var.dtype) + 0.5)


def _assert_export_matches(cfg: dict, widths=(0.25, 0.5), aux: bool = True, prepare=None):
    """Exported (standalone narrow) segmentor logits = the slimmed full model's (decode and auxiliary)."""
    model = _segmentor(cfg)
    _randomize_bn(model)
    if prepare is not None:
        prepare(model)
    state = model.state_dict()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    for width in widths:
        new_cfg, new_state, narrow = slimming.export_model(cfg, state, width)
        assert 'slimmable' not in new_cfg['backbone']
        exported = _segmentor(new_cfg)
        exported.load_state_dict(new_state, strict=True)
        with torch.no_grad(), backbones.at_width(model.backbone, width):
            expected = [model(x, mode='tensor')]
            if aux:
                expected.append(model.auxiliary_head(model.extract_feat(x)))
        with torch.no_grad():
            got = [exported(x, mode='tensor')]
            if aux:
                got.append(exported.auxiliary_head(exported.extract_feat(x)))
        assert list(narrow.out_channels) != list(model.backbone.out_channels)
        for g, e in zip(got, expected):
            assert g.shape == e.shape and e.abs().max() > 0
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5 * float(e.abs().max()))
    return new_cfg


def test_export_model_slices_upernet_and_fcn_auxiliary_heads_exactly():
    arch = backbones.FocalNet.micro_arch('tiny-srf')            # outputs 8, 16, 32, 64 channels
    channels = [8, 16, 32, 64]
    cfg = dict(type='EncoderDecoder',
               backbone=dict(type='backbones.FocalNet', arch=arch, slimmable=dict(), drop_path_rate=0.0,
                             init_cfg=None),
               decode_head=dict(type='UPerHead', in_channels=channels, in_index=[0, 1, 2, 3], pool_scales=(1, 2),
                                channels=8, dropout_ratio=0.0, num_classes=3, norm_cfg=dict(type='BN'),
                                align_corners=False),
               auxiliary_head=dict(type='FCNHead', in_channels=32, in_index=2, channels=4, num_convs=1,
                                   concat_input=True, dropout_ratio=0.0, num_classes=3,
                                   norm_cfg=dict(type='BN'), align_corners=False))
    new_cfg = _assert_export_matches(cfg)
    assert new_cfg['decode_head']['in_channels'] == [4, 8, 16, 32]          # width 0.5
    assert new_cfg['auxiliary_head']['in_channels'] == 16
    # a head whose input weights are not known is refused by name, not exported wrongly
    cfg['auxiliary_head']['type'] = 'PSPHead'
    with pytest.raises(NotImplementedError, match="auxiliary_head='PSPHead'"):
        slimming.export_model(cfg, {}, 0.5)


def test_export_model_slices_cascade_ocr_heads_on_resize_concat_exactly():
    """OCRNet (CascadeEncoderDecoder) as configs/hrformer: FCNHead and OCRHead on the four HRFormer branches
    resized and concatenated; HRFormer's per-width BatchNorm statistics made distinct."""
    arch = backbones.HRFormer.micro_arch('small')               # branches 8, 16, 24, 32 channels
    channels = [8, 16, 24, 32]
    common = dict(in_channels=channels, in_index=(0, 1, 2, 3), input_transform='resize_concat',
                  dropout_ratio=-1, num_classes=3, norm_cfg=dict(type='BN'), align_corners=False)
    cfg = dict(type='CascadeEncoderDecoder', num_stages=2,
               backbone=dict(type='backbones.HRFormer', arch=arch, slimmable=dict(step=0.25), init_cfg=None),
               decode_head=[dict(type='FCNHead', channels=sum(channels), kernel_size=1, num_convs=1,
                                 concat_input=False, **common),
                            dict(type='OCRHead', channels=16, ocr_channels=8, **common)])

    def per_width_statistics(model):
        model.backbone.train()
        with torch.no_grad():
            for width in backbones.trained_widths(model.backbone):
                with backbones.at_width(model.backbone, width):
                    model.backbone(torch.randn(2, 3, 64, 64, dtype=torch.float64))
        model.backbone.eval()

    new_cfg = _assert_export_matches(cfg, aux=False, prepare=per_width_statistics)
    assert [h['in_channels'] for h in new_cfg['decode_head']] == [[4, 8, 12, 16]] * 2


def test_export_model_fcn_head_without_convs_narrows_its_channels():
    """FCNHead(num_convs=0): the classifier reads the input itself, so `channels` follows the input."""
    arch = backbones.FocalNet.micro_arch('tiny-srf')
    cfg = dict(type='EncoderDecoder',
               backbone=dict(type='backbones.FocalNet', arch=arch, slimmable=dict(), drop_path_rate=0.0,
                             init_cfg=None),
               decode_head=dict(type='FCNHead', in_channels=64, channels=64, num_convs=0, concat_input=False,
                                dropout_ratio=0.0, num_classes=3, align_corners=False))
    new_cfg = _assert_export_matches(cfg, aux=False)
    assert new_cfg['decode_head']['in_channels'] == new_cfg['decode_head']['channels'] == 32


def _scala_experiment_tool():
    """tools/scala_experiment.py as a module (it needs mmseg's registry for its configs)."""
    pytest.importorskip('mmseg')
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'scala_experiment', Path(__file__).resolve().parents[1] / 'tools' / 'scala_experiment.py')
    experiment = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(experiment)
    return experiment


def test_scala_experiment_builds_the_natively_narrow_config(tmp_path):
    """tools/scala_experiment.py: the separately trained width-r model is the plain demo config with the
    architecture `export-width` gives at r, on the scaled schedule."""
    experiment = _scala_experiment_tool()
    demo = Path(experiment.__file__).resolve().parents[1] / 'configs' / 'demo'
    scala = experiment.scaled_config(demo / 'fpn_focalnet-demo-scala_demo-shapes.py', 0.25, tmp_path)
    plain = experiment.scaled_config(demo / 'fpn_focalnet-demo_demo-shapes.py', 0.25, tmp_path)
    assert scala['train_cfg']['max_iters'] == 100 and scala['model']['warmup_iters'] == 10
    assert [(s['begin'], s['end']) for s in plain['param_scheduler']] == [(0, 10), (10, 100)]
    assert plain['train_dataloader']['dataset']['data_root'] == f'{tmp_path}/'
    narrow = experiment.narrow_config(scala, plain, 0.5)
    model = narrow['model']
    assert model['type'] == 'EncoderDecoder' and 'slimmable' not in model['backbone']
    assert model['neck']['in_channels'] == [16, 32, 64, 128]
    assert backbones.FocalNet(**{k: v for k, v in model['backbone'].items() if k != 'type'}).out_channels == [16, 32, 64, 128]
    assert narrow['train_cfg'] == plain['train_cfg'] and narrow['optim_wrapper'] == plain['optim_wrapper']
    full = experiment.narrow_config(scala, plain, 1.0)['model']
    assert full['neck'] == plain['model']['neck'] and full['decode_head'] == plain['model']['decode_head']
    widest = backbones.FocalNet(**{k: v for k, v in full['backbone'].items() if k != 'type'})
    assert sum(p.numel() for p in widest.parameters()) == sum(
        p.numel() for p in backbones.FocalNet(**{k: v for k, v in plain['model']['backbone'].items()
                                                 if k != 'type'}).parameters())


@pytest.mark.parametrize('name,arch', CASES, ids=IDS)
def test_lowrank_export_equals_the_slice_with_ranks(name, arch):
    """lowrank= beside slimmable=: per-group widths, fewer blocks and a rank ratio per stage export to a
    natively narrow low-rank model (lowrank=dict(ratio=ranks)) computing exactly the supernet slice."""
    model = build(name, arch, slimmable=dict(widths=[0.25, 0.5, 0.75, 1.0]), lowrank=dict(ratio=1.0),
                  drop_path_rate=0.0).double().eval()
    stages = len(slimming.rank_ratios(model))
    groups, depths = backbones.width_groups(model), backbones.depth_stages(model)
    widths = [(0.5, 1.0, 0.75, 0.25)[i % 4] for i in range(len(groups))]
    kept = [max(1, d - 1) for d in depths] or None
    ranks = [(0.5, 0.75, 1.0, 0.25)[i % 4] for i in range(stages)]
    x = image(torch.float64, 1)
    with torch.no_grad():
        with backbones.at_width(model, widths, kept):
            built_ranks = model(x)
        with backbones.at_width(model, widths, kept, ranks):
            expected = model(x)
    assert not any(torch.equal(a, b) for a, b in zip(built_ranks, expected))      # the ranks take effect
    narrow = backbones.export_width(model, widths, kept, ranks).eval()
    assert narrow.lowrank_cfg['ratio'] == ranks and narrow.lowrank_layers
    assert min(narrow.lowrank_layers.values()) < min(model.lowrank_layers.values())
    with torch.no_grad():
        got = slimming.pad_to_full(narrow(x), backbones.channel_map(model, widths))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-12 * e.abs().max().item())


def test_export_model_with_ranks_writes_lowrank_config_loaded_without_svd():
    from mmdet.models.necks import FPN
    from backbones import load_pretrained
    arch = BACKBONE_CLASSES['SVT'].micro_arch('small')
    model = build('SVT', 'small', slimmable=dict(widths=[0.25, 0.5, 1.0]), lowrank=dict(ratio=1.0),
                  drop_path_rate=0.0).eval()
    neck = FPN(in_channels=list(model.out_channels), out_channels=8, num_outs=4).eval()
    cfg = dict(backbone=dict(type='backbones.SVT', arch=arch, drop_path_rate=0.0, lowrank=dict(ratio=1.0),
                             slimmable=dict(widths=[0.25, 0.5, 1.0])),
               neck=dict(type='FPN', in_channels=list(model.out_channels), out_channels=8, num_outs=4))
    state = {f'backbone.{k}': v for k, v in model.state_dict().items()}
    state.update({f'neck.{k}': v for k, v in neck.state_dict().items()})
    widths, ranks = [0.5, 1.0, 0.25, 0.5], [0.75, 0.5, 1.0, 0.25]
    new_cfg, new_state, _ = slimming.export_model(cfg, state, widths, None, ranks)
    backbone_cfg = dict(new_cfg['backbone'])
    assert backbone_cfg['lowrank'] == dict(ratio=ranks) and 'slimmable' not in backbone_cfg
    rebuilt = BACKBONE_CLASSES[backbone_cfg.pop('type').split('.')[-1]](**backbone_cfg).eval()
    report = load_pretrained(rebuilt, {'state_dict': {k[9:]: v for k, v in new_state.items()
                                                      if k.startswith('backbone.')}})
    assert not report.adapted                      # the low-rank layout loads as is (no SVD of anything)
    new_neck = FPN(**{k: v for k, v in new_cfg['neck'].items() if k != 'type'}).eval()
    new_neck.load_state_dict({k[5:]: v for k, v in new_state.items() if k.startswith('neck.')})
    x = image(n=1)
    with torch.no_grad():
        with backbones.at_width(model, widths, ranks=ranks):
            expected = neck(model(x))
        got = new_neck(rebuilt(x))
    for g, e in zip(got, expected):
        assert ((g - e).abs().max() / e.abs().max()).item() < 1e-5


def test_scala_experiment_seeds_and_table(tmp_path):
    """tools/scala_experiment.py: a seed sets every run's `randomness` and the ScalaModel's draws; the table
    averages each width over seeds, per Scala teacher, and judges the mean difference against 1 point."""
    experiment = _scala_experiment_tool()
    demo = Path(experiment.__file__).resolve().parents[1] / 'configs' / 'demo'
    scala = experiment.scaled_config(demo / 'fpn_focalnet-demo-scala_demo-shapes.py', 0.25, tmp_path, seed=3)
    plain = experiment.scaled_config(demo / 'fpn_focalnet-demo_demo-shapes.py', 0.25, tmp_path, seed=3)
    assert scala['randomness'] == plain['randomness'] == dict(seed=3) and scala['model']['seed'] == 3
    assert 'seed' not in plain['model']

    def run(seed, teacher, diffs):
        rows = [dict(task='seg', seed=seed, teacher=teacher, width=w, metric='mIoU', scala=80.0 + d,
                     separate=80.0, difference=d, exported=80.0 + d) for w, d in zip(experiment.WIDTHS, diffs)]
        if seed == 0 and not teacher:                       # the first seed measures the exported models
            rows[0].update(exported_params=10, backbone_params=5, latency_ms=1.0)
        return dict(task='seg', seed=seed, teacher=teacher, iters=4, scale=1.0, scala_wall_s=9.0,
                    separate_wall_s=10.0, rows=rows)
    text = experiment.table([run(0, None, [-3.0, 0.5, -0.5, 1.0]), run(1, None, [1.0, -1.5, -1.0, 1.0]),
                             run(0, 'full', [0.0, 0.0, 0.0, -2.0])])
    lines = [line for line in text.splitlines() if line.startswith('| seg |')]
    assert lines[0].startswith('| seg | config | 0.25 | mIoU | 2 | 79.0000 ± 2.8284 | 80.0000 ± 0.0000 | '
                               '-1.0000 ± 2.8284 | -3.000 +1.000 | yes | yes | 10 (5) | 1.00 |')
    assert '| -0.500 -1.500 |' not in text and '| +0.500 -1.500 | yes |' in lines[1]    # mean -0.5
    assert '| -0.500 -1.000 | yes |' in lines[2]                                      # mean -0.75
    assert lines[4].startswith('| seg | full | 0.25 | mIoU | 1 |') and lines[7].split('|')[10].strip() == 'no'
    assert 'within 1 point or better: 7 of 8' in text                                 # -1.0 is within
    # results come from every run's own file under OUT, whichever command (or concurrent one) wrote it
    for r in (run(1, None, [0.0] * 4), run(0, 'full', [0.0] * 4), run(0, None, [0.0] * 4)):
        where = tmp_path / 'out' / ('' if r['seed'] == 0 else f"seed{r['seed']}") / 'seg'
        where.mkdir(parents=True, exist_ok=True)
        (where / f"result-{r['teacher'] or 'config'}.json").write_text(json.dumps(r))
    assert [(r['seed'], r['teacher']) for r in experiment.collect(tmp_path / 'out')] == [(0, None), (1, None),
                                                                                      (0, 'full')]


def test_scala_experiment_variants_are_named_runs_of_their_own(tmp_path):
    """tools/scala_experiment.py --set KEY=VALUE: ScalaModel keys, dotted into nested dicts, make a variant
    named by its options (a lone teacher by its value, as in older results), tabled apart from the config's."""
    experiment = _scala_experiment_tool()
    demo = Path(experiment.__file__).resolve().parents[1] / 'configs' / 'demo'
    scala = experiment.scaled_config(demo / 'fpn_focalnet-demo-scala_demo-shapes.py', 0.25, tmp_path)
    experiment.set_options(scala['model'], {'backbone.slimmable.step': 0.25, 'teacher': 'full'})
    assert scala['model']['backbone']['slimmable'] == dict(min_width=0.25, step=0.25)
    assert scala['model']['teacher'] == 'full' and scala['model']['backbone']['type'] == 'backbones.FocalNet'
    with pytest.raises(ValueError, match='not a dict'):
        experiment.set_options(scala['model'], {'teacher.x': 1})
    assert experiment.parse_options(['backbone.slimmable.step=0.25', 'teacher=full', 'neck.in_channels=[8, 16]']) == {
        'backbone.slimmable.step': 0.25, 'teacher': 'full', 'neck.in_channels': [8, 16]}
    with pytest.raises(ValueError, match='KEY=VALUE'):
        experiment.parse_options(['teacher'])
    assert experiment.variant_name(None) == '' and experiment.variant_name({'teacher': 'full'}) == 'full'
    assert experiment.variant_name({'backbone.slimmable.step': 0.25, 'distill_weight': 2}) == \
        'backbone.slimmable.step=0.25,distill_weight=2'
    plain = experiment.scaled_config(demo / 'fpn_focalnet-demo_demo-shapes.py', 0.25, tmp_path)
    # the separately trained models do not depend on the variant: their runs are shared
    assert experiment.narrow_config(scala, plain, 0.5) == experiment.narrow_config(
        experiment.scaled_config(demo / 'fpn_focalnet-demo-scala_demo-shapes.py', 0.25, tmp_path), plain, 0.5)
    rows = [dict(task='seg', seed=0, teacher=None, variant='step=0.25', width=w, metric='mIoU', scala=80.0,
                 separate=80.5, difference=-0.5) for w in experiment.WIDTHS]
    text = experiment.table([dict(task='seg', seed=0, teacher=None, variant='step=0.25', iters=4, scale=1.0,
                                  scala_wall_s=9.0, separate_wall_s=10.0, rows=rows)])
    assert '| seg | step=0.25 | 0.25 | mIoU | 1 |' in text and '| Scala variant |' in text


def test_benchmark_times_each_exported_width_against_the_sliced_model():
    """`tools/benchmark.py VARIANT --width ...` (issue 16's latency per width): per width the natively narrow
    backbone that export_width makes (ours) against the slimmable model set to that width (the peer's place)."""
    from backbones.benchmark import _narrow_fields, benchmark, format_table
    micro = BACKBONE_CLASSES['S3'].micro_arch('tiny')
    records = benchmark(['s3-tiny'], [(40, 56)], [1], ['infer'], [1], ['fp32'], [False], False, warmup=1,
                        repeats=1, arch_overrides=micro, log=lambda _: None, widths=[0.25])
    assert not any('error' in r for r in records)
    assert [(r['impl'], r['width']) for r in records] == [('sliced', 0.25), ('ours', 0.25)]
    sliced, narrow = records
    assert sliced['model_kwargs'] == dict(slimmable=True) and sliced['arch_overrides'] == micro
    full = build('S3', 'tiny', slimmable=True)
    assert sliced['params_m'] == pytest.approx(sum(p.numel() for p in full.parameters()) / 1e6)
    expected = _narrow_fields(backbones.export_width(full, 0.25))
    assert narrow['arch_overrides'] == expected['arch_overrides'] and narrow['model_kwargs'] == expected['model_kwargs']
    assert narrow['width'] == 0.25 and narrow['params_m'] < sliced['params_m'] / 4
    assert narrow['speedup_vs_peer'] == sliced['median_ms'] / narrow['median_ms']
    table = format_table(records)
    assert 'ours, sliced' in table and 'ours params (M)' in table and '0.25' in table
    with pytest.raises(ValueError, match='exclusive'):
        benchmark(['s3-tiny'], [(40, 56)], [1], ['infer'], [1], ['fp32'], [False], True, widths=[0.5])
