"""Deployment paths on micro widths: torch.compile (no graph breaks, same outputs as eager), bf16
autocast on CPU (finite, close to fp32), ONNX export with dynamic height/width checked with
onnxruntime against eager at sizes other than the export size.

ONNX recipe (TorchScript exporter, `dynamo=False`): export with an input whose height and width need
padding in every stage (not multiples of 32 × window, e.g. 77×141), so every `pad` / `resize` branch is
recorded with shape-dependent amounts; the graph then also serves inputs that need none (zero pads).
Exported at a size that needs no padding, the branches are dropped from the graph and other sizes
fail (checked below, so a future change that makes padding branch-free shows up here).
"""
import io

import pytest
import torch

from backbones.focalnet import FocalNet
from backbones.hrformer import HRFormer
from backbones.s3 import S3
from backbones.twins import PCPVT, SVT

MODELS = {'focalnet': (FocalNet, 'tiny-srf'), 'pcpvt': (PCPVT, 'small'), 'svt': (SVT, 'small'),
          'hrformer': (HRFormer, 'small'), 's3': (S3, 'tiny')}


def micro(name: str) -> torch.nn.Module:
    cls, arch = MODELS[name]
    torch.manual_seed(0)
    model = cls(arch=cls.micro_arch(arch), drop_path_rate=0.0)
    model.init_weights()
    return model.eval()


def inputs(*sizes: tuple[int, int]) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(1, 3, h, w, generator=gen) for h, w in sizes]


# ---- torch.compile -----------------------------------------------------------------------------------
@pytest.mark.parametrize('name', MODELS)
def test_dynamo_no_graph_breaks(name):
    model = micro(name)
    (x,) = inputs((77, 141))
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


# Inductor's C++ code generation costs 10-40 s per family on one thread and 140 s for S3 (many distinct
# window shapes); its kernels are the same ops for S3 as for the others, whose runs cover it. S3's graph
# capture and AOT-autograd equality run in the aot_eager test instead; for the other families the
# inductor test covers the same capture and AOT stages (running both cost ~2 minutes of a 2-core CI).
INDUCTOR_MODELS = [name for name in MODELS if name != 's3']


@pytest.mark.parametrize('name', [name for name in MODELS if name not in INDUCTOR_MODELS])
def test_compiled_graph_equals_eager(name):
    """Dynamo capture + AOT autograd (no C++ code generation) for the families the inductor test skips."""
    torch._dynamo.reset()
    model = micro(name)
    compiled = torch.compile(model, backend='aot_eager')
    for x in inputs((77, 141)):
        with torch.no_grad():
            expected, got = model(x), compiled(x)
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize('name', INDUCTOR_MODELS)
def test_compiled_equals_eager(name):
    """Default backend (inductor, C++ code generation on CPU: minutes per model on one thread)."""
    torch._dynamo.reset()
    model = micro(name)
    compiled = torch.compile(model)
    for x in inputs((77, 141)):
        with torch.no_grad():
            expected, got = model(x), compiled(x)
        assert len(expected) == len(got)
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


# ---- bf16 autocast ---------------------------------------------------------------------------------
@pytest.mark.parametrize('name', MODELS)
def test_bf16_autocast_finite_and_close(name):
    model = micro(name)
    (x,) = inputs((96, 128))
    with torch.no_grad():
        reference = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = model(x)
    for a, b in zip(low, reference):
        assert torch.isfinite(a).all()
        relative = (a.float() - b).norm() / b.norm()
        assert relative < 0.05, f'bf16 relative error {relative:.3f}'   # bf16 eps 2^-8, a few layers deep


@pytest.mark.parametrize('name', MODELS)
def test_bf16_autocast_finite_at_800x1333(name):
    model = micro(name)
    (x,) = inputs((800, 1333))
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        outs = model(x)
    assert all(torch.isfinite(o).all() for o in outs)


# ---- ONNX --------------------------------------------------------------------------------------------
def export_onnx(model: torch.nn.Module, x: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    torch.onnx.export(model, (x,), buffer, dynamo=False, opset_version=17, input_names=['image'],
                      dynamic_axes={'image': {0: 'batch', 2: 'height', 3: 'width'}})
    return buffer.getvalue()


def eager_and_onnx(model: torch.nn.Module, session, x: torch.Tensor) -> tuple[tuple, list[torch.Tensor]]:
    """(eager outputs, onnxruntime outputs as tensors) for one input."""
    with torch.no_grad():
        expected = model(x)
    return expected, [torch.from_numpy(a) for a in session.run(None, {'image': x.numpy()})]


@pytest.mark.filterwarnings('ignore::torch.jit.TracerWarning')
@pytest.mark.parametrize('name', MODELS)
def test_onnx_dynamic_hw_matches_eager(name):
    ort = pytest.importorskip('onnxruntime')
    pytest.importorskip('onnx')
    model = micro(name)
    export_input, *checks = inputs((77, 141), (64, 96), (128, 160))
    session = ort.InferenceSession(export_onnx(model, export_input))
    for x in checks:
        expected, got = eager_and_onnx(model, session, x)
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.filterwarnings('ignore::torch.jit.TracerWarning')
def test_onnx_s3_serves_only_the_window_regime_of_its_export_size():
    """S3 follows the official window rule: whether a stage's window is clamped to its map (one window
    row, no shift) or shifted depends on the map size, a Python branch that a traced graph fixes. The
    graph exported at 77x141 (stages 2-3 clamped) serves every size of that regime (the test above); at
    320x320 stage 2 (20x20 > 14) needs shifted 14x14 windows, which that graph does not compute."""
    ort = pytest.importorskip('onnxruntime')
    model = micro('s3')
    export_input, other_regime = inputs((77, 141), (320, 320))
    session = ort.InferenceSession(export_onnx(model, export_input))
    try:
        expected, got = eager_and_onnx(model, session, other_regime)
    except Exception:   # onnxruntime refuses a reshape: not served either
        return
    assert any(a.shape != b.shape or not torch.allclose(a, b, atol=1e-4) for a, b in zip(got, expected))


@pytest.mark.filterwarnings('ignore::torch.jit.TracerWarning')
def test_onnx_exported_without_padding_does_not_generalise():
    """Documents the recipe above: exported at a size that needs no padding, the FocalNet patch
    embedding's pad branch is dropped and a size that needs it gives wrongly sized outputs."""
    ort = pytest.importorskip('onnxruntime')
    model = micro('focalnet')
    export_input, odd = inputs((64, 96), (77, 141))
    session = ort.InferenceSession(export_onnx(model, export_input))
    expected, got = eager_and_onnx(model, session, odd)
    assert any(a.shape != b.shape for a, b in zip(got, expected))


@pytest.mark.filterwarnings('ignore::torch.jit.TracerWarning')
def test_lean_model_exports_to_onnx_and_runs_in_onnxruntime():
    """A `lean=True` model exports (the chunked paths step aside while tracing, so the graph is the default
    path's, which the per-family ONNX tests above cover) with dynamic H/W, and the benchmark's onnxruntime
    runner (`backbones memory --onnx` measures its peak) serves another size."""
    pytest.importorskip('onnxruntime')
    from backbones.benchmark import onnx_runner
    cls, arch = MODELS['hrformer']
    torch.manual_seed(0)
    model = cls(arch=cls.micro_arch(arch), drop_path_rate=0.0, lean=True).eval()
    run = onnx_runner(model, (77, 141), threads=1)
    for x in inputs((77, 141), (64, 96)):
        with torch.no_grad():
            expected = model(x)
        got = run(x)
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            assert a.shape == b.shape and (a - b).abs().max() <= 1e-4 * b.abs().max()
