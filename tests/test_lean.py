"""Lean inference (`lean=`): exact chunked forwards of every family's blocks against the default path, on
micro widths at odd sizes (padded, shifted windows), with many chunks; training keeps the default path."""
import pytest
import torch

from backbones import BACKBONE_CLASSES
from backbones.lean import lean_modules
from backbones.memory import simulate, trace_forward

CLASSES = list(BACKBONE_CLASSES.values())
IDS = [c.__name__ for c in CLASSES]


def _pair(cls, arch=None, **lean):
    arch = cls.micro_arch(arch or next(iter(cls.ARCHS)))
    torch.manual_seed(0)
    default = cls(arch=arch, drop_path_rate=0.0).eval()
    for p in default.parameters():       # non-trivial BatchNorm statistics, biases, tables
        with torch.no_grad():
            p.add_(0.05 * torch.randn_like(p))
    for name, b in default.named_buffers():
        if name.endswith('running_var'):
            b.uniform_(0.5, 1.5)
        elif name.endswith('running_mean'):
            b.normal_(0, 0.1)
    model = cls(arch=arch, drop_path_rate=0.0, lean=lean or True).eval()
    model.load_state_dict(default.state_dict())
    return default, model


def _close(default, model, x):
    with torch.inference_mode():
        for a, b in zip(default(x), model(x)):
            assert a.shape == b.shape
            assert (a - b).abs().max() <= 1e-5 * a.abs().max(), (a - b).abs().max() / a.abs().max()


@pytest.mark.parametrize('chunk', [64, 1 << 16])
@pytest.mark.parametrize('cls', CLASSES, ids=IDS)
def test_lean_blocks_equal_the_default_at_odd_sizes(cls, chunk):
    default, model = _pair(cls, chunk_bytes=chunk)
    assert lean_modules(model) > 0
    _close(default, model, torch.randn(2, 3, 70, 90))
    _close(default, model, torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize('arch', ['small', 'base'])
def test_lean_svt_and_pcpvt_gsa_sub_sampling(arch):
    default, model = _pair(BACKBONE_CLASSES['SVT'], arch, chunk_bytes=512)
    _close(default, model, torch.randn(1, 3, 99, 67))
    default, model = _pair(BACKBONE_CLASSES['PCPVT'], arch, chunk_bytes=512)
    _close(default, model, torch.randn(1, 3, 99, 67))


def test_lean_hrformer_pad_mask_and_no_rpe():
    cls = BACKBONE_CLASSES['HRFormer']
    arch = cls.micro_arch('small')
    torch.manual_seed(1)
    default = cls(arch=arch, pad_mask=True, with_rpe=False).eval()
    model = cls(arch=arch, pad_mask=True, with_rpe=False, lean=dict(chunk_bytes=128)).eval()
    model.load_state_dict(default.state_dict())
    _close(default, model, torch.randn(1, 3, 75, 53))


@pytest.mark.parametrize('cls', CLASSES, ids=IDS)
def test_lean_steps_aside_for_training_and_hooks(cls):
    default, model = _pair(cls, chunk_bytes=256)
    x = torch.randn(1, 3, 64, 72)
    model.train()
    sum(o.mean() for o in model(x)).backward()      # autograd: the default path, gradients flow
    model.eval()
    model.load_state_dict(default.state_dict())      # training moved the BatchNorm statistics
    seen = []
    block = next(m for m in model.modules() if hasattr(m, 'mixer_tap'))
    handle = block.register_forward_hook(lambda m, i, o: seen.append(o))
    _close(default, model, x)
    handle.remove()
    assert seen


@pytest.mark.parametrize('cls', CLASSES, ids=IDS)
def test_lean_lowers_the_modelled_peak(cls):
    default, model = _pair(cls, chunk_bytes=16384)
    size = (96, 96) if cls.__name__ == 'HRFormer' else (64, 64)   # HRFormer: its stage 1 must dominate
    a = simulate(trace_forward(default, size), {})
    b = simulate(trace_forward(model, size), {})
    assert b.live_peak < a.live_peak


@pytest.mark.parametrize('cls', CLASSES, ids=IDS)
def test_lean_with_low_rank_layers(cls):
    arch = cls.micro_arch(next(iter(cls.ARCHS)))
    torch.manual_seed(0)
    default = cls(arch=arch, drop_path_rate=0.0, lowrank=dict(ratio=0.5)).eval()
    model = cls(arch=arch, drop_path_rate=0.0, lowrank=dict(ratio=0.5), lean=dict(chunk_bytes=512)).eval()
    model.load_state_dict(default.state_dict())
    _close(default, model, torch.randn(1, 3, 70, 90))


@pytest.mark.parametrize('extra', [dict(focal_levels=[3, 3, 3, 3]),
                                   dict(use_layerscale=True, normalize_modulator=True,
                                        use_postln_in_modulation=True),
                                   dict(use_postln=True)])
def test_lean_focal_modulation_variants(extra):
    cls = BACKBONE_CLASSES['FocalNet']
    arch = dict(cls.micro_arch('tiny-lrf'), **extra)
    torch.manual_seed(0)
    default = cls(arch=arch, drop_path_rate=0.0).eval()
    model = cls(arch=arch, drop_path_rate=0.0, lean=dict(chunk_bytes=256)).eval()
    model.load_state_dict(default.state_dict())
    _close(default, model, torch.randn(1, 3, 83, 61))


@pytest.mark.parametrize('cls', CLASSES, ids=IDS)
def test_lean_leaves_the_caller_s_image_and_outputs_alone(cls):
    """Lean blocks overwrite their own intermediates only: the image a caller passes is unchanged, a
    second call gives the same outputs, and the returned maps are not overwritten by a later call."""
    default, model = _pair(cls)
    x = torch.randn(1, 3, 70, 90, generator=torch.Generator().manual_seed(5))
    kept = x.clone()
    with torch.no_grad():
        first = model(x)
        saved = [o.clone() for o in first]
        second = model(x)
    assert torch.equal(x, kept)
    for a, b, c in zip(first, saved, second):
        assert torch.equal(a, b) and torch.equal(b, c)
