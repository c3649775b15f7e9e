"""The memory model: the simulated allocator against hand counts and against the real forward (same
operators, same allocations), on micro widths. No timing and no RSS here: measured peaks live in the
benchmark tool (`backbones memory`, `tools/benchmark.py`)."""
import pytest
import torch
from torch import nn

from backbones import BACKBONE_CLASSES
from backbones.memory import (HeapModel, _channel_block, kernel_scratch, parse_size, predict, report_of, simulate,
                              trace_forward)

CLASSES = list(BACKBONE_CLASSES.values())
IDS = [c.__name__ for c in CLASSES]


class TwoLayer(nn.Module):
    """Tokens (N, L, 16) → Linear 16→64 → GELU (out of place) → Linear 64→16."""

    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 16)

    def forward(self, x):
        x = x.flatten(2).transpose(1, 2)          # (N, H*W, 3) view, then a contiguous copy of 16 channels
        x = torch.cat([x] * 5 + [x[..., :1]], -1)
        return self.fc2(self.act(self.fc1(x)))


def test_hand_count_of_a_two_layer_mlp():
    model = TwoLayer().eval()
    tokens = 5 * 7
    tracer = trace_forward(model, (5, 7), batch=2)
    sim = simulate(tracer, {})
    cat = 2 * tokens * 16 * 4                     # the concatenation
    hidden = 2 * tokens * 64 * 4                  # fc1 output, then GELU's new output
    out = 2 * tokens * 16 * 4
    # peak: GELU's output while fc1's output and the concatenation are still referenced by the caller
    assert sim.live_peak == max(cat + 2 * hidden, cat + hidden + hidden, hidden + out + cat)
    assert sim.live_peak == cat + 2 * hidden
    allocated = [e[2] for e in tracer.events if e[0] == 'alloc']
    assert sorted(allocated) == sorted([cat, hidden, hidden, out])


@pytest.mark.parametrize('batch', [1, 2])
@pytest.mark.parametrize('lean', [False, True])
@pytest.mark.parametrize('cls', CLASSES, ids=IDS)
def test_fake_trace_matches_the_real_forward(cls, lean, batch):
    """The model's trace on fake tensors allocates exactly what the real forward allocates (operator by
    operator: sizes, order, frees, kernel scratch), fast paths included, at an odd size. A batch of one
    checks the layouts (eager's strides of size-one dimensions decide oneDNN's path and its scratch)."""
    arch = cls.micro_arch(next(iter(cls.ARCHS)))
    torch.manual_seed(0)
    model = cls(arch=arch, drop_path_rate=0.0, **({'lean': True} if lean else {})).eval()
    fake = trace_forward(model, (65, 97), batch=batch)
    real = trace_forward(model, (65, 97), inputs=torch.randn(batch, 3, 65, 97))
    strip = lambda t: [(e[0], e[2], e[3], e[4]) if e[0] in ('alloc', 'touch') else e[:1] + e[2:] if e[0] == 'scratch'
                       else e[:1] for e in t.events]     # noqa: E731 (storage keys differ between runs)
    assert strip(fake) == strip(real)
    weights = {n or '(model)': 0 for n, _ in model.named_modules()}
    a, b = simulate(fake, weights), simulate(real, weights)
    assert a.live_peak == b.live_peak > 0 and a.peak == b.peak >= a.live_peak


def test_convolution_scratch_follows_the_weight_layout():
    """oneDNN's per-call scratch of a convolution (kernel_scratch): NCHW activations reorder the larger of
    input / output plus the weight; channels-last activations only the weight, twice when torch must
    first copy a weight that is not channels-last contiguous (kernels larger than 1x1, not depth-wise)."""
    conv = torch.ops.aten.convolution.default
    nbytes = lambda t: t.numel() * t.element_size()     # noqa: E731
    x = torch.empty(1, 16, 10, 10)                 # 16 channels: a whole number of oneDNN blocks (8 or 16)
    cl = x.contiguous(memory_format=torch.channels_last)
    out = torch.empty(1, 32, 5, 5)
    dense, one, depthwise = torch.empty(32, 16, 2, 2), torch.empty(32, 16, 1, 1), torch.empty(16, 1, 3, 3)
    assert kernel_scratch(conv, (x, dense), out) == nbytes(x) + nbytes(dense)
    block = _channel_block()                       # the plain path pads channels to the block
    x18, dw18 = torch.empty(1, 18, 10, 10), torch.empty(18, 1, 3, 3)
    padded = -(-18 // block) * block
    assert kernel_scratch(conv, (x18, dw18), x18) == 100 * padded * 4 + nbytes(dw18) > nbytes(x18) + nbytes(dw18)
    assert kernel_scratch(conv, (cl, dense), out) == 2 * nbytes(dense)
    assert kernel_scratch(conv, (cl, one), out) == nbytes(one)
    assert kernel_scratch(conv, (cl, depthwise), out) == nbytes(depthwise)
    odd = cl.as_strided(cl.shape, (16, 1, 160, 16))  # channels-last view, batch stride not the largest
    assert odd.is_contiguous(memory_format=torch.channels_last)       # yet torch runs it as NCHW, after a copy
    assert kernel_scratch(conv, (odd, dense), out) == 2 * nbytes(x) + nbytes(dense)

    class Downsample(nn.Module):                  # channels-last tokens into a strided 2x2 convolution
        def __init__(self):
            super().__init__()
            self.proj = nn.Conv2d(3, 16, 2, stride=2)

        def forward(self, x):
            return self.proj(x.contiguous(memory_format=torch.channels_last))

    model = Downsample()
    tracer = trace_forward(model, (8, 8))
    assert [e[1] for e in tracer.events if e[0] == 'scratch'] == [2 * nbytes(model.proj.weight)]
    sim = simulate(tracer, {}, mmap_threshold=1)   # every block mapped: pages of input copy + output + scratch
    pages = lambda n: -(-(n + 16) // 4096) * 4096   # noqa: E731
    assert sim.peak == pages(3 * 8 * 8 * 4) + pages(16 * 4 * 4 * 4) + pages(2 * nbytes(model.proj.weight))


def test_uninitialised_buffers_become_resident_as_written():
    """An `empty` buffer filled in parts (lean inference's outputs) is a fresh mapping whose pages are
    resident only once written: the allocator model counts the written bytes, the tensor count all."""
    class Fill(nn.Module):
        def forward(self, x):                     # x: (1, 3, 32, 32), 12 KiB
            out = x.new_empty(4, x.numel())       # 48 KiB, uninitialised
            out[0].copy_(x.flatten())             # a quarter written
            return out[:1] * 2                    # 12 KiB result

    tracer = trace_forward(Fill(), (32, 32))
    kinds = [e[0] for e in tracer.events if e[0] in ('lazy', 'alloc', 'touch')]
    assert kinds == ['lazy', 'alloc', 'touch', 'alloc']
    sim = simulate(tracer, {}, mmap_threshold=1)
    quarter, pages = 3 * 32 * 32 * 4, lambda n: -(-(n + 16) // 4096) * 4096   # noqa: E731
    assert sim.live_peak == 5 * quarter
    assert sim.peak == 2 * pages(quarter)         # the written quarter + the result


def test_heap_model_reuses_best_fit_and_coalesces():
    heap = HeapModel(trim_above=1 << 30)
    heap.alloc(1, 100)
    heap.alloc(2, 50)
    heap.alloc(3, 100)
    heap.release(1)
    heap.release(2)                              # 150 free at the bottom (coalesced)
    heap.alloc(4, 140)
    assert heap.top == 250 and heap.used[4][0] == 0
    heap.alloc(5, 20)                            # too big for the 10-byte hole: from the top
    assert heap.top == 270


def test_report_rows_and_weights():
    cls = CLASSES[0]
    model = cls(arch=cls.micro_arch(next(iter(cls.ARCHS))), drop_path_rate=0.0)
    report = report_of(model, 'micro', (64, 64))
    assert report.weight_bytes == sum(p.numel() * 4 for p in model.parameters()) + sum(
        b.numel() * b.element_size() for b in model.buffers())
    assert report.modules and report.predicted_peak_bytes >= report.live_peak_bytes > 0
    assert max(r['peak'] for r in report.modules) == report.live_peak_bytes
    assert report.predicted_total_bytes == report.weight_bytes + report.input_bytes + report.predicted_peak_bytes


def test_batch_scales_the_activations():
    one = predict('twins-svt-small', '64x96', batch=1)
    two = predict('twins-svt-small', (64, 96), batch=2)
    assert 1.9 * one.live_peak_bytes < two.live_peak_bytes <= 2 * one.live_peak_bytes
    assert parse_size('512') == (512, 512)


@pytest.mark.parametrize('size', ['512x', 'axb', '16x512', '1x2x3', (31, 64)])
def test_bad_sizes_are_named(size):
    with pytest.raises(ValueError, match='--size'):
        parse_size(size)


def test_bad_variant_and_batch():
    with pytest.raises(KeyError, match='variant'):
        predict('resnet-50', '64x64')
    with pytest.raises(ValueError, match='batch'):
        predict('twins-svt-small', '64x64', batch=0)


# ---- lean inference ---------------------------------------------------------------------------------
def _pair(cls, **lean):
    arch = cls.micro_arch(next(iter(cls.ARCHS)))
    torch.manual_seed(0)
    default = cls(arch=arch, drop_path_rate=0.0).eval()
    lean_model = cls(arch=arch, drop_path_rate=0.0, lean=lean or True).eval()
    lean_model.load_state_dict(default.state_dict())
    return default, lean_model


@pytest.mark.parametrize('cls', CLASSES, ids=IDS)
def test_lean_inference_equals_the_default(cls):
    default, lean_model = _pair(cls, chunk_bytes=256)       # micro widths: many chunks
    x = torch.randn(2, 3, 65, 97)
    with torch.inference_mode():
        for a, b in zip(default(x), lean_model(x)):
            assert a.shape == b.shape
            assert (a - b).abs().max() <= 1e-5 * a.abs().max()
    lean_model.train()                                      # training takes the default path, gradients flow
    sum(o.mean() for o in lean_model(x[:1])).backward()


def test_lean_lowers_the_modelled_peak_and_bad_values_are_named():
    cls = BACKBONE_CLASSES['PCPVT']
    default, lean_model = _pair(cls, chunk_bytes=16384)
    a = simulate(trace_forward(default, (128, 128)), {})
    b = simulate(trace_forward(lean_model, (128, 128)), {})
    assert b.live_peak < a.live_peak
    for bad in ('yes', dict(chunk_bytes=0), dict(chunk=5)):
        with pytest.raises(ValueError, match='lean'):
            cls(arch=cls.micro_arch('small'), lean=bad)
