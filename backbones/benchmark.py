"""Speed and memory benchmark: ours vs the installable peer implementations with the same weights.

Measures, for any zoo variant: inference latency / throughput, one training step (forward + backward
+ AdamW step) and peak memory, at any input size, batch size, thread count, fp32 or bf16 autocast,
eager or `torch.compile`. Every configuration runs in a FRESH subprocess (no allocator or thread-pool
state shared between configurations): warm-up iterations, then >= 5 timed repeats; median, min, max
and interquartile range are reported.

Peak memory:
* CPU: peak resident set size (Linux `VmHWM`) above the resident size of the built model, optimizer and
  input (`VmRSS`), measured inside the subprocess after resetting the high-water mark through
  `/proc/self/clear_refs` (value 5). This is what the process really holds at its peak (activations,
  gradients, optimizer state, allocator slack), not tensor bytes; `tracemalloc` does not see torch's
  allocations. Where `clear_refs` is not writable, `ru_maxrss` (whole process lifetime) is reported and
  flagged.
* CUDA: `torch.cuda.max_memory_allocated` above the memory allocated before the timed loop.

`--compare` runs the peer of each variant (mmseg 1.2.2 `PCPVT`/`SVT`, mmpose 1.3.2 `HRFormer`, HF
transformers `FocalNetModel`, mmdet 3.3.0 `SwinTransformer` for S3 at its widths and depths, window 7 in
both) in the same run: the peer is built with a fixed seed, its state dict is
converted by OUR converter into our model, so both compute the same function with the same weights;
the report gives the speed ratio (peer time / our time, > 1 = we are faster), the memory ratio (ours /
peer) and the max absolute output difference on the same input.

`--peer timm --peer-python PY` (S3): the peer is timm's `swin_s3_*` (the official searched windows, built
for the input size), run by another interpreter PY whose environment has timm (timm needs torchvision,
which does not install beside the CPU torch of ours: e.g. a venv with `torch==2.14.1 torchvision==0.29.1
timm`). The peer's worker writes its state dict; ours loads it with our converter (timm layout), without the
dense output norms timm's features lack. timm rolls the map before padding it and does not mask padded keys,
so on sizes that need padding (512²: 128 = 18·7 + 2) it computes another function than the official
pad-then-roll; where nothing is padded (448²) the outputs are the same.

`--width 0.25 0.5 0.75 1` (Scala, `backbones.slimming`): per width, the natively narrow backbone that
`export_width` makes ("ours": its arch and constructor arguments, fresh weights: speed does not depend on
them) against the slimmable model running at that width in the peer's place ("ours, sliced": the full-size
model, whose forward hooks narrow every weight on each call); params_m is each model's own count.

Usage::

    python tools/benchmark.py twins-pcpvt-small --size 512x512 --batch 1 --threads 2 --compare
    python tools/benchmark.py hrformer-small --size 256x192 --batch 8 --mode train --compare --json out.json
    python tools/benchmark.py s3-tiny --width 0.25 0.5 0.75 1
"""
from __future__ import annotations

import argparse
import copy
import gc
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import torch

# ---------------------------------------------------------------------------------------------------
# configurations
# ---------------------------------------------------------------------------------------------------


@dataclass
class Config:
    """One measured configuration (one subprocess)."""
    variant: str                      # zoo name, e.g. 'twins-pcpvt-small'
    impl: str = 'ours'                # 'ours' or 'peer'
    mode: str = 'infer'               # 'infer' or 'train'
    size: tuple[int, int] = (512, 512)
    batch: int = 1
    threads: int = 2
    dtype: str = 'fp32'               # 'fp32' or 'bf16' (autocast)
    compile: bool = False
    device: str = 'cpu'
    warmup: int = 2
    repeats: int = 5
    compare: bool = False             # ours built with the peer's weights (converted)
    arch_overrides: dict = field(default_factory=dict)
    outputs_path: Optional[str] = None  # where the worker saves its outputs for the max-diff check
    model_kwargs: dict = field(default_factory=dict)  # mechanism keywords (lean=, lowrank=, ...), ours only
    checkpoint: Optional[str] = None  # load these weights into ours (path), e.g. a `backbones fit` output
    steady_peak: bool = False         # CPU: peak of the timed repeats only, from a trimmed heap (see below)
    malloc_mmap_threshold: Optional[int] = None  # glibc MALLOC_MMAP_THRESHOLD_ of the worker (fixed allocator)
    runtime: str = 'torch'            # 'torch', or 'onnxruntime': ours exported to ONNX (dynamic H/W), inference
    peer_source: str = ''             # '' the family's peer (PEERS), or an entry of ALT_PEERS ('timm')
    python: str = ''                  # the worker's interpreter ('' this one): a peer's own environment
    state_path: Optional[str] = None  # the peer writes its state dict here (ours then loads it: `checkpoint`)
    width: Optional[float] = None     # ours built slimmable (model_kwargs' `slimmable`) and run at this width


PEERS = {'twins-pcpvt': 'mmseg PCPVT', 'twins-svt': 'mmseg SVT', 'hrformer': 'mmpose HRFormer',
         'focalnet': 'HF FocalNetModel', 's3': 'mmdet SwinTransformer'}
S3_PEER_WINDOW = 7   # mmdet's Swin has one window for every stage; S3's searched windows differ per stage
ALT_PEERS = {('s3', 'timm'): 'timm swin_s3'}   # other peers, chosen with --peer (their own interpreter)


def _family_of(variant: str) -> str:
    for prefix in PEERS:
        if variant.startswith(prefix + '-'):
            return prefix
    raise KeyError(f'no peer known for {variant!r}; peers exist for {sorted(PEERS)}')


# ---------------------------------------------------------------------------------------------------
# model building (ours and peers)
# ---------------------------------------------------------------------------------------------------
def _our_class_and_arch(variant: str, overrides: dict) -> tuple[type, dict]:
    from ._factory import _zoo
    zoo = _zoo()
    if variant not in zoo:
        raise KeyError(f'unknown variant {variant!r}; backbones.list_backbones() lists them')
    cls, arch = zoo[variant]
    cfg = cls.resolve_arch(arch)
    cfg.update(overrides)
    return cls, cfg


def _mmpose_extra(cfg: dict) -> dict:
    extra = dict(drop_path_rate=0.0, with_pad_mask=False, stage1=dict(cfg['stage1']))
    for s in ('stage2', 'stage3', 'stage4'):
        st = dict(cfg[s])
        st['window_sizes'] = st.pop('num_window_sizes')
        st['mlp_ratios'] = st.pop('num_mlp_ratios')
        st['block'] = 'HRFORMERBLOCK'
        extra[s] = st
    return extra


def build_peer(variant: str, overrides: Optional[dict] = None, source: str = '',
               size: tuple[int, int] = (512, 512)) -> torch.nn.Module:
    """The installed peer implementation of `variant` (`source`: '' its family's, or of ALT_PEERS),
    randomly initialised with seed 0 (timm's is built for input `size`)."""
    family = _family_of(variant)
    _, cfg = _our_class_and_arch(variant, overrides or {})
    torch.manual_seed(0)
    if source:
        if (family, source) != ('s3', 'timm') or overrides:
            raise ValueError(f'peer {source!r}: known for {sorted(ALT_PEERS)} (family, peer), official '
                             f'variants only; got {variant!r}' + (f' with overrides {overrides}' if overrides else ''))
        import timm
        return timm.create_model(variant.replace('s3-', 'swin_s3_') + '_224', pretrained=False, img_size=size)
    if family in ('twins-pcpvt', 'twins-svt'):
        from mmseg.models import backbones as mmseg_backbones
        common = dict(in_channels=3, embed_dims=cfg['embed_dims'], num_heads=cfg['num_heads'],
                      mlp_ratios=cfg['mlp_ratios'], qkv_bias=True, depths=cfg['depths'],
                      sr_ratios=cfg['sr_ratios'], drop_path_rate=0.0)
        if family == 'twins-svt':
            return mmseg_backbones.SVT(windiow_sizes=cfg['wss'], norm_after_stage=True, **common)
        return mmseg_backbones.PCPVT(norm_after_stage=False, **common)
    if family == 's3':     # mmdet 3.3.0 Swin at S3's widths and depths (head dim 32 = width / heads, as S3)
        from mmdet.models.backbones import SwinTransformer
        heads = [h[0] if isinstance(h, (list, tuple)) else h for h in cfg['num_heads']]
        peer = SwinTransformer(embed_dims=cfg['embed_dim'][0], depths=cfg['depths'], num_heads=heads,
                               window_size=S3_PEER_WINDOW, mlp_ratio=4, qkv_bias=True, drop_path_rate=0.0,
                               patch_norm=True, out_indices=(0, 1, 2, 3), with_cp=False, convert_weights=False)
        peer.init_weights()
        return peer
    if family == 'hrformer':
        from mmpose.models.backbones.hrformer import HRFormer as MMPoseHRFormer
        peer = MMPoseHRFormer(extra=_mmpose_extra(copy.deepcopy(cfg)), norm_cfg=dict(type='BN'))
        peer.init_weights()
        return peer
    import transformers
    config = transformers.FocalNetConfig(
        embed_dim=cfg['embed_dim'], depths=cfg['depths'], focal_levels=cfg['focal_levels'],
        focal_windows=cfg['focal_windows'], use_conv_embed=cfg['use_conv_embed'],
        use_layerscale=cfg['use_layerscale'], layerscale_value=cfg['layerscale_value'],
        use_post_layernorm=cfg['use_postln'], use_post_layernorm_in_modulation=cfg['use_postln_in_modulation'],
        normalize_modulator=cfg['normalize_modulator'], hidden_dropout_prob=0.0, drop_path_rate=0.0)
    return transformers.FocalNetModel(config, add_pooling_layer=False)


def build_ours(variant: str, overrides: Optional[dict] = None, peer_weights: bool = False,
               model_kwargs: Optional[dict] = None) -> torch.nn.Module:
    """Our model of `variant` (drop-path 0; `model_kwargs` go to the constructor). With `peer_weights`,
    switched to compute the peer's function (LayerNorm eps, RPE, fusion mode) and loaded with the peer's
    weights via our converter."""
    from .weights import load_pretrained
    family = _family_of(variant) if peer_weights else None
    cls, cfg = _our_class_and_arch(variant, overrides or {})
    kwargs: dict[str, Any] = dict(drop_path_rate=0.0, **(model_kwargs or {}))
    if family == 'twins-svt':
        cfg['norm_layer'] = 'torch.nn.LayerNorm'   # mmseg's LayerNorms use eps 1e-5
    if family == 'hrformer':
        kwargs.update(with_rpe=True, fuse_upsample='bilinear', pad_mask=False)
    if family == 'focalnet':
        kwargs.update(out_norm=False, stem_conv_padding=2)  # HF: classification layout, no dense norms
    if family == 's3':
        cfg['window_size'] = S3_PEER_WINDOW   # the peer's window everywhere, so the weights compute the same
    model = cls(arch=cfg, **kwargs)
    if peer_weights:
        peer_state = build_peer(variant, overrides).state_dict()
        load_pretrained(model, {'state_dict': peer_state})
    return model


def _as_outputs(impl: str, variant: str, out: Any) -> list[torch.Tensor]:
    """Feature maps an implementation returns, in a comparable order (NCHW)."""
    if impl == 'peer' and isinstance(out, list):     # timm's intermediates (already NCHW)
        return out
    if impl == 'peer' and variant.startswith('focalnet-'):
        return [out.reshaped_hidden_states[-1]]   # HF: stage outputs come after the downsample
    outs = list(out)
    if impl == 'ours' and variant.startswith('focalnet-'):
        return outs[-1:]
    return outs


def _run_peer(model: torch.nn.Module, variant: str, x: torch.Tensor) -> Any:
    if hasattr(model, 'forward_intermediates'):      # timm: every stage's output, NCHW
        return model.forward_intermediates(x, intermediates_only=True)
    if variant.startswith('focalnet-'):
        return model(x, output_hidden_states=True)   # dense use needs every stage
    return model(x)


def _loss(outs: Any, variant: str, impl: str) -> torch.Tensor:
    if impl == 'peer' and variant.startswith('focalnet-'):
        outs = outs.reshaped_hidden_states[1:]
    return sum(o.float().mean() for o in outs)


# ---------------------------------------------------------------------------------------------------
# memory probes
# ---------------------------------------------------------------------------------------------------
def _proc_status_kib(field_name: str) -> Optional[int]:
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field_name + ':'):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def _steady_baseline() -> tuple[bool, Optional[int]]:
    """`steady_peak`: after the warm-up, return freed heap pages to the system (glibc `malloc_trim`) and
    reset the high-water mark, so the peak counts what a steady-state call touches, not the first
    call's one-off costs (oneDNN kernel generation, library pages) nor heap left resident before it."""
    gc.collect()
    try:
        import ctypes
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return _reset_peak_rss(), _proc_status_kib('VmRSS')


# ---------------------------------------------------------------------------------------------------
# worker (one configuration, in its own process)
# ---------------------------------------------------------------------------------------------------
def run_config(cfg: Config) -> dict:
    """Measure one configuration in THIS process (use `measure` to get a fresh subprocess)."""
    torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    if cfg.impl == 'ours':
        alt = cfg.compare and bool(cfg.peer_source)      # the peer's weights come from its worker's file
        model = build_ours(cfg.variant, cfg.arch_overrides, peer_weights=cfg.compare and not alt,
                           model_kwargs=dict(cfg.model_kwargs, out_norm=False) if alt else cfg.model_kwargs)
        if cfg.checkpoint:
            from .weights import load_pretrained
            load_pretrained(model, cfg.checkpoint)
        if cfg.width is not None:
            from .slimming import set_width
            set_width(model, cfg.width)
    else:
        model = build_peer(cfg.variant, cfg.arch_overrides, cfg.peer_source, cfg.size)
        if cfg.state_path:
            torch.save(model.state_dict(), cfg.state_path)
    model.to(device)
    train = cfg.mode == 'train'
    model.train(train)
    runner = torch.compile(model) if cfg.compile else model
    if cfg.runtime == 'onnxruntime':
        if train or cfg.impl != 'ours' or device.type != 'cpu':
            raise ValueError('runtime onnxruntime: inference of ours on the CPU only')
        runner = onnx_runner(model, cfg.size, cfg.threads)
    elif cfg.runtime != 'torch':
        raise ValueError(f"runtime: 'torch' or 'onnxruntime', got {cfg.runtime!r}")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(cfg.batch, 3, *cfg.size, generator=gen).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4) if train else None
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.dtype == 'bf16')

    def forward():
        with autocast:
            return runner(x) if cfg.impl == 'ours' else _run_peer(runner, cfg.variant, x)

    def step():
        if train:
            optimizer.zero_grad(set_to_none=True)
            _loss(forward(), cfg.variant, cfg.impl).backward()
            optimizer.step()
        else:
            with torch.inference_mode():
                forward()
        if device.type == 'cuda':
            torch.cuda.synchronize()

    gc.collect()
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        base_mem = torch.cuda.memory_allocated()
    peak_reset = _reset_peak_rss()
    base_rss = _proc_status_kib('VmRSS')
    t_compile = time.perf_counter()
    step()                                   # first call (compilation when compiling)
    first_call_s = time.perf_counter() - t_compile
    for _ in range(max(cfg.warmup - 1, 0)):
        step()
    if cfg.steady_peak and device.type == 'cpu':
        peak_reset, base_rss = _steady_baseline()
    times = []
    for _ in range(cfg.repeats):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    if device.type == 'cuda':
        peak_mib = (torch.cuda.max_memory_allocated() - base_mem) / 2 ** 20
        memory_method = 'cuda.max_memory_allocated - allocated before the loop'
    elif peak_reset and base_rss is not None:
        peak_mib = (_proc_status_kib('VmHWM') - base_rss) / 1024
        memory_method = ('VmHWM - VmRSS over the repeats after warm-up and malloc_trim' if cfg.steady_peak
                         else 'VmHWM (reset via clear_refs) - VmRSS of the built model')
    else:
        import resource
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        memory_method = 'ru_maxrss (whole process, includes the model)'
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    result = dict(asdict(cfg), median_ms=statistics.median(times), min_ms=min(times), max_ms=max(times),
                  iqr_ms=q[2] - q[0], times_ms=times, throughput_img_s=cfg.batch / statistics.median(times) * 1e3,
                  peak_mem_mib=peak_mib, memory_method=memory_method, first_call_s=first_call_s,
                  params_m=sum(p.numel() for p in model.parameters()) / 1e6,
                  torch=torch.__version__, host=_host())
    if cfg.outputs_path:
        model.eval()
        with torch.inference_mode(), autocast:
            xs = torch.randn(1, 3, *cfg.size, generator=torch.Generator().manual_seed(1)).to(device)
            out = runner(xs) if cfg.impl == 'ours' else _run_peer(runner, cfg.variant, xs)
            torch.save([o.float().cpu() for o in _as_outputs(cfg.impl, cfg.variant, out)], cfg.outputs_path)
    return result


def onnx_runner(model: torch.nn.Module, size: tuple[int, int], threads: int):
    """`model` exported to ONNX with dynamic batch / height / width (the deploy path: opset 17, traced),
    as a callable running it in onnxruntime with `threads` threads. The CPU memory arena and memory
    patterns are off, so that a run's working memory is allocated and freed per run and the peak RSS
    above the steady state is the runtime's activation peak (with them on, onnxruntime keeps its largest
    working set resident between runs)."""
    import io
    import onnxruntime as ort
    buffer = io.BytesIO()
    x = torch.zeros(1, 3, *size)
    with torch.no_grad():
        torch.onnx.export(model.eval(), (x,), buffer, dynamo=False, opset_version=17, input_names=['image'],
                          dynamic_axes={'image': {0: 'batch', 2: 'height', 3: 'width'}})
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    session = ort.InferenceSession(buffer.getvalue(), options, providers=['CPUExecutionProvider'])
    del buffer

    def run(image: torch.Tensor):
        return [torch.from_numpy(a) for a in session.run(None, {'image': image.numpy()})]
    return run


def _host() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return 'cpu'


def measure(cfg: Config) -> dict:
    """Run `cfg` in a fresh subprocess (OMP/MKL threads set before torch starts) and return its record."""
    env = dict(os.environ, OMP_NUM_THREADS=str(cfg.threads), MKL_NUM_THREADS=str(cfg.threads))
    if cfg.malloc_mmap_threshold:
        env['MALLOC_MMAP_THRESHOLD_'] = str(cfg.malloc_mmap_threshold)
    if cfg.python:                    # another environment: it finds this package through PYTHONPATH
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env['PYTHONPATH'] = os.pathsep.join(filter(None, [root, env.get('PYTHONPATH')]))
    cmd = [cfg.python or sys.executable, '-m', 'backbones.benchmark', '--worker', json.dumps(asdict(cfg))]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return dict(asdict(cfg), error=proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else
                    f'exit {proc.returncode}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------
# driver and report
# ---------------------------------------------------------------------------------------------------
def _key(r: dict) -> tuple:
    return (r['variant'], r['mode'], tuple(r['size']), r['batch'], r['threads'], r['dtype'], r['compile'],
            r.get('width'))


def benchmark(variants: list[str], sizes: list[tuple[int, int]], batches: list[int], modes: list[str],
              threads: list[int], dtypes: list[str], compile_modes: list[bool], compare: bool,
              device: str = 'cpu', warmup: int = 2, repeats: int = 5, arch_overrides: Optional[dict] = None,
              rounds: int = 1, log=print, model_kwargs: Optional[dict] = None, vs_plain: bool = False,
              peer_source: str = '', peer_python: str = '', widths: Optional[list[float]] = None) -> list[dict]:
    """Every combination, ours (and the peer with `compare`), one subprocess each, run one after another;
    `rounds` > 1 repeats the subprocesses, alternating peer/ours order, and pools the timings.
    `model_kwargs`: mechanism keywords for ours (e.g. {'adapter': {'type': 'ARC'}}, {'lean': True}); with
    `vs_plain` ours is compared with itself built without them (records of impl 'plain' in the peer's
    place: speed and memory ratios, outputs not compared). `peer_source` (with `compare`): a peer of
    ALT_PEERS, run by the interpreter `peer_python`; ours loads the weights its first run writes.
    `widths` (slimmable backbones): per width, the exported natively narrow backbone as ours and the
    slimmable model set to that width as impl 'sliced' in the peer's place (`model_kwargs['slimmable']`:
    its grid, default Scala's)."""
    if sum(map(bool, (compare, vs_plain, widths))) > 1:
        raise ValueError('benchmark: compare (peer), vs_plain and widths are exclusive')
    if peer_source and not compare:
        raise ValueError('benchmark: a peer source needs compare')
    impls = ('peer', 'ours') if compare else ('plain', 'ours') if vs_plain else ('sliced', 'ours') if widths \
        else ('ours',)
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        state = os.path.join(tmp, 'peer_state.pt') if peer_source else None   # the peer's weights, for ours
        for variant, width in itertools.product(variants, widths or [None]):
            per_impl = {i: dict(arch_overrides=arch_overrides or {}, model_kwargs=dict(model_kwargs or {}))
                        for i in impls}
            if vs_plain:
                per_impl['plain']['model_kwargs'] = {}
            if width is not None:
                per_impl['sliced'] = dict(per_impl['sliced'], width=width)
                per_impl['sliced']['model_kwargs'].setdefault('slimmable', True)
                per_impl['ours'] = exported_overrides(variant, width, per_impl['sliced']['arch_overrides'],
                                                      per_impl['sliced']['model_kwargs'])
            for mode, size, batch, n_threads, dtype, comp in itertools.product(modes, sizes, batches, threads,
                                                                                dtypes, compile_modes):
                runs: dict[str, list[dict]] = {i: [] for i in impls}
                for round_ in range(rounds):
                    # alternate the order so that drift of the machine hits both
                    for impl in (impls if round_ % 2 == 0 else impls[::-1]):
                        outputs_path = (os.path.join(tmp, f'{impl}.pt') if compare and mode == 'infer' and round_ == 0
                                        else None)
                        alt = dict(peer_source=peer_source, python=peer_python if impl == 'peer' else '',
                                   state_path=state if impl == 'peer' and round_ == 0 else None,
                                   checkpoint=state if impl == 'ours' else None)
                        cfg = Config(variant=variant, impl='peer' if impl == 'peer' else 'ours', mode=mode,
                                     size=size, batch=batch, threads=n_threads, dtype=dtype, compile=comp,
                                     device=device, warmup=warmup, repeats=repeats, compare=compare,
                                     outputs_path=outputs_path, **copy.deepcopy(per_impl[impl]), **alt)
                        rec = dict(measure(cfg), impl=impl, width=width)
                        log(_one_line(rec))
                        runs[impl].append(rec)
                group = [_merge_rounds(runs[i]) for i in impls]
                if len(group) == 2 and not any('error' in g for g in group):
                    other, ours = group
                    ours['speedup_vs_peer'] = other['median_ms'] / ours['median_ms']
                    ours['mem_ratio_vs_peer'] = (ours['peak_mem_mib'] / other['peak_mem_mib']
                                                 if other['peak_mem_mib'] > 0 else None)
                    if compare and mode == 'infer':
                        a = torch.load(os.path.join(tmp, 'ours.pt'), weights_only=True)
                        b = torch.load(os.path.join(tmp, 'peer.pt'), weights_only=True)
                        ours['max_abs_diff_vs_peer'] = max((u - v).abs().max().item() for u, v in zip(a, b))
                records.extend(group)
    return records


def exported_overrides(variant: str, width: float, arch_overrides: Optional[dict] = None,
                       model_kwargs: Optional[dict] = None) -> dict:
    """`arch_overrides` and `model_kwargs` of the natively narrow backbone that `export_width` makes of
    `variant` (built with `model_kwargs`, which hold `slimmable`) at `width`: a Config of ours with them
    builds that model (fresh weights)."""
    from .slimming import export_width
    cls, cfg = _our_class_and_arch(variant, arch_overrides or {})
    model = cls(arch=cfg, **(model_kwargs or {}))
    return _narrow_fields(export_width(model, width))


def _narrow_fields(narrow: torch.nn.Module) -> dict:
    """The Config fields (arch_overrides, model_kwargs) that rebuild `narrow`, an exported backbone."""
    kwargs = {k: v for k, v in narrow._init_arguments.items() if k not in ('arch', 'init_cfg', 'drop_path_rate')}
    if getattr(narrow, 'lowrank_cfg', None):        # a mechanism keyword: not among the recorded arguments
        kwargs['lowrank'] = dict(ratio=list(narrow.lowrank_cfg['ratio']))
    return dict(arch_overrides=copy.deepcopy(narrow.arch_cfg), model_kwargs=kwargs)


def _merge_rounds(recs: list[dict]) -> dict:
    """One record from several subprocess rounds of the same configuration: all timed repeats pooled
    (median / spread over them), peak memory = the largest, per-round medians kept."""
    errors = [r for r in recs if 'error' in r]
    if errors:
        return errors[0]
    times = [t for r in recs for t in r['times_ms']]
    merged = dict(recs[0], times_ms=times, rounds=len(recs), round_medians_ms=[r['median_ms'] for r in recs],
                  median_ms=statistics.median(times), min_ms=min(times), max_ms=max(times),
                  peak_mem_mib=max(r['peak_mem_mib'] for r in recs))
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    merged['iqr_ms'] = q[2] - q[0]
    merged['throughput_img_s'] = merged['batch'] / merged['median_ms'] * 1e3
    return merged


def _one_line(r: dict) -> str:
    if 'error' in r:
        return f"  {r['variant']} {r['impl']} {r['mode']}: ERROR {r['error']}"
    width = f" width {r['width']:g}" if r.get('width') is not None else ''
    return (f"  {r['variant']:<20} {r['impl']:<4}{width} {r['mode']:<5} {r['size'][0]}x{r['size'][1]} b{r['batch']} "
            f"t{r['threads']} {r['dtype']}{' compiled' if r['compile'] else ''}: median {r['median_ms']:.1f} ms "
            f"[{r['min_ms']:.1f}, {r['max_ms']:.1f}] peak {r['peak_mem_mib']:.0f} MiB")


def format_table(records: list[dict]) -> str:
    """One row per configuration: ours, the peer, ratios and max output difference (with widths: the
    width and our model's parameters after the variant)."""
    by_key: dict[tuple, dict] = {}
    for r in records:
        if 'error' not in r:
            by_key.setdefault(_key(r), {})[r['impl']] = r
    head = ('variant', 'mode', 'input', 'b', 'thr', 'dtype', 'compile', 'ours ms (IQR)', 'peer', 'peer ms (IQR)',
            'speed x', 'ours MiB', 'peer MiB', 'mem x', 'max |diff|')
    with_widths = any(key[7] is not None for key in by_key)
    if with_widths:
        head = head[:1] + ('width', 'ours params (M)') + head[1:]
    rows = [head]
    for key, impls in by_key.items():
        ours, peer = impls.get('ours'), impls.get('peer', impls.get('plain', impls.get('sliced')))
        cell = (lambda r: f"{r['median_ms']:.1f} ({r['iqr_ms']:.1f})" if r else '-')
        diff = ours.get('max_abs_diff_vs_peer') if ours else None
        rows.append((key[0], key[1], f'{key[2][0]}x{key[2][1]}', str(key[3]), str(key[4]), key[5],
                     'yes' if key[6] else 'no', cell(ours),
                     _peer_name(peer, key[0]) if peer else '-',
                     cell(peer),
                     f"{ours['speedup_vs_peer']:.2f}" if ours and 'speedup_vs_peer' in ours else '-',
                     f"{ours['peak_mem_mib']:.0f}" if ours else '-', f"{peer['peak_mem_mib']:.0f}" if peer else '-',
                     f"{ours['mem_ratio_vs_peer']:.2f}" if ours and ours.get('mem_ratio_vs_peer') else '-',
                     f'{diff:.1e}' if diff is not None else '-'))
        if with_widths:
            rows[-1] = rows[-1][:1] + (f'{key[7]:g}', f"{ours['params_m']:.2f}" if ours else '-') + rows[-1][1:]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ['  '.join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, '  '.join('-' * w for w in widths))
    return '\n'.join(lines)


def _peer_name(peer: dict, variant: str) -> str:
    if peer['impl'] in ('plain', 'sliced'):
        return f"ours, {peer['impl']}"
    family = _family_of_safe(variant)
    if peer.get('peer_source'):
        return f"{ALT_PEERS.get((family, peer['peer_source']), peer['peer_source'])} (torch {peer.get('torch', '?')})"
    return PEERS.get(family, '-')


def _family_of_safe(variant: str) -> str:
    try:
        return _family_of(variant)
    except KeyError:
        return ''


def _size(text: str) -> tuple[int, int]:
    h, w = text.lower().split('x')
    return int(h), int(w)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='benchmark', description=__doc__.split('\n\n')[0])
    parser.add_argument('variants', nargs='*', help="zoo names, e.g. twins-pcpvt-small hrformer-small")
    parser.add_argument('--size', nargs='+', type=_size, default=[(512, 512)], help='HxW, e.g. 512x512 800x1333')
    parser.add_argument('--batch', nargs='+', type=int, default=[1])
    parser.add_argument('--mode', nargs='+', choices=('infer', 'train'), default=['infer'])
    parser.add_argument('--threads', nargs='+', type=int, default=[2])
    parser.add_argument('--dtype', nargs='+', choices=('fp32', 'bf16'), default=['fp32'])
    parser.add_argument('--compile', nargs='+', choices=('eager', 'compile'), default=['eager'])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--rounds', type=int, default=2,
                        help='subprocess rounds per configuration, alternating peer/ours order (pooled)')
    parser.add_argument('--arch', type=json.loads, default={},
                        help='JSON overrides of the variant, e.g. \'{"focal_windows": [9, 9, 9, 9]}\'')
    parser.add_argument('--compare', action='store_true', help='also run the peer implementation, same weights')
    parser.add_argument('--peer', default='', choices=['', *sorted({src for _, src in ALT_PEERS})],
                        help="with --compare: another peer than the family's (ALT_PEERS), e.g. timm for S3")
    parser.add_argument('--peer-python', default='',
                        help='the interpreter of an environment where --peer imports (e.g. a venv with timm)')
    parser.add_argument('--model-kwargs', type=json.loads, default={},
                        help='JSON mechanism keywords for ours, e.g. \'{"adapter": {"type": "ARC"}}\' or \'{"lean": true}\'')
    parser.add_argument('--vs-plain', action='store_true',
                        help='compare ours with --model-kwargs against ours without them (the "peer" columns)')
    parser.add_argument('--width', nargs='+', type=float, default=[],
                        help='slimmable widths: the exported natively narrow backbone per width vs the slimmable '
                             'model at that width (--model-kwargs \'{"slimmable": {...}}\': its grid)')
    parser.add_argument('--json', default='benchmark.json', help='where to write every record')
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        cfg = Config(**json.loads(args.worker))
        cfg.size = tuple(cfg.size)
        print(json.dumps(run_config(cfg)))
        return 0
    if not args.variants:
        parser.error('name at least one variant (backbones.list_backbones())')
    if args.peer and not args.compare:
        parser.error('--peer goes with --compare')
    if args.repeats < 5:
        print('note: fewer than 5 repeats; medians are less reliable', file=sys.stderr)
    records = benchmark(args.variants, args.size, args.batch, args.mode, args.threads, args.dtype,
                        [c == 'compile' for c in args.compile], args.compare, args.device, args.warmup,
                        args.repeats, args.arch, args.rounds, model_kwargs=args.model_kwargs,
                        vs_plain=args.vs_plain, peer_source=args.peer, peer_python=args.peer_python,
                        widths=args.width)
    print()
    print(format_table(records))
    with open(args.json, 'w') as f:
        json.dump(records, f, indent=1)
    print(f'\n{len(records)} records -> {args.json}')
    return int(any('error' in r for r in records))


if __name__ == '__main__':
    sys.exit(main())
