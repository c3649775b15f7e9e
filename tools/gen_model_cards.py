#!/usr/bin/env python
"""Generate `model_cards/<family>.md` from the checkpoint table (backbones/zoo.py) and each class's ARCHS.

Nothing in model_cards/ is edited by hand; `tests/test_model_cards.py` fails when a card drifts from this
generator's output. Parameter counts and FLOPs are measured on the meta device (no weights, no data):
FLOPs with `torch.utils.flop_counter.FlopCounterMode` for one 224×224 image through the backbone with its
default `out_indices`, reported as GMACs (= counted FLOPs / 2, the convention of the papers' "FLOPs").

The second FLOP column is mmengine's analysis tool (`mmengine.analysis.FlopAnalyzer`, fvcore convention:
one multiply-add = one "flop") on real tensors; it is slow for the large variants, so it is measured once
with `--measure-mmengine` into model_cards/flops_mmengine.json, which the cards read (a test re-measures a
small variant against the file). mmengine counts norms and upsampling but not
`scaled_dot_product_attention` (Twins, HRFormer attention products), torch's counter the reverse.

Usage: python tools/gen_model_cards.py [--out model_cards] [--check] [--measure-mmengine]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from backbones import count_parameters  # noqa: E402
from backbones._factory import _zoo  # noqa: E402
from backbones.zoo import DEFAULT_CHECKPOINTS, Checkpoint, all_checkpoints  # noqa: E402

FAMILIES = {
    'focalnet': dict(title='FocalNet', classes=('FocalNet',), paper='Focal Modulation Networks (NeurIPS 2022)'),
    'twins': dict(title='Twins (PCPVT, SVT)', classes=('PCPVT', 'SVT'),
                  paper='Twins: Revisiting the Design of Spatial Attention in Vision Transformers (NeurIPS 2021)'),
    'hrformer': dict(title='HRFormer', classes=('HRFormer',),
                     paper='HRFormer: High-Resolution Transformer for Dense Prediction (NeurIPS 2021)'),
    's3': dict(title='S3 (AutoFormerV2)', classes=('S3',),
               paper='Searching the Search Space of Vision Transformer (NeurIPS 2021)'),
}
FLOPS_SIZE = 224
SECTIONS = Path(__file__).resolve().parents[1] / 'model_cards' / 'sections'
MMENGINE_FLOPS = Path(__file__).resolve().parents[1] / 'model_cards' / 'flops_mmengine.json'



def measure(cls: type, arch: str) -> tuple[int, float, list[dict]]:
    """(parameters, GMACs at FLOPS_SIZE², feature_info) of a full-size variant, on the meta device."""
    with torch.device('meta'):
        model = cls(arch=arch).eval()
        x = torch.empty(1, 3, FLOPS_SIZE, FLOPS_SIZE)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    return count_parameters(model), counter.get_total_flops() / 2e9, model.feature_info


def measure_mmengine(cls: type, arch: str) -> float:
    """GMACs of one FLOPS_SIZE² image by mmengine's FlopAnalyzer (real tensors, random weights)."""
    from mmengine.analysis import FlopAnalyzer
    torch.manual_seed(0)
    model = cls(arch=arch).eval()
    analyzer = FlopAnalyzer(model, (torch.randn(1, 3, FLOPS_SIZE, FLOPS_SIZE),))
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    with torch.no_grad():
        return analyzer.total() / 1e9


def mmengine_table() -> dict[str, float]:
    return json.loads(MMENGINE_FLOPS.read_text()) if MMENGINE_FLOPS.is_file() else {}


def _sources(entry: Checkpoint) -> str:
    return '<br>'.join(f"[{s.host}]({s.url}){'' if s.direct else ' (manual)'}: {s.layout}, {s.hash_status}"
                       for s in entry.sources)


def _metrics(entry: Checkpoint) -> str:
    if not entry.metrics:
        return 'none published'
    return '<br>'.join(f'{m.metric} **{m.value:g}** on {m.dataset}' + (f' ({m.setting})' if m.setting else '')
                       + f' — [source]({m.where})' for m in entry.metrics)


def _usage(family: str, cls_name: str, backbone: str, arch: str, checkpoint: str, channels: list[int]) -> str:
    return f"""### Usage

Plain PyTorch:
```python
import backbones
model = backbones.create_backbone('{backbone}', pretrained=True)   # loads {checkpoint}
features = model(images)   # tuple of N×C×h×w maps; channels/strides in model.feature_info
```

mmdet (neck input channels from `feature_info`):
```python
custom_imports = dict(imports=['backbones'], allow_failed_imports=False)
model = dict(
    backbone=dict(_delete_=True, type='backbones.{cls_name}', arch='{arch}',
                  init_cfg=dict(type='Pretrained', checkpoint='{checkpoint}')),
    neck=dict(in_channels={channels}))
```

mmseg (UperNet):
```python
custom_imports = dict(imports=['backbones'], allow_failed_imports=False)
model = dict(
    backbone=dict(_delete_=True, type='backbones.{cls_name}', arch='{arch}',
                  init_cfg=dict(type='Pretrained', checkpoint='{checkpoint}')),
    decode_head=dict(in_channels={channels}))
```

mmpose (top-down heatmap): the same `backbone=` dict; the head's `in_channels` is the channel count of the
output it reads. Or let the tool write the whole config for any stock config:
```bash
backbones swap mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_res50_8xb64-210e_coco-256x192.py \\
    {backbone} --out my_config.py
```
"""


def render(family: str) -> str:
    info = FAMILIES[family]
    table = _zoo()
    variants = sorted((n, c, a) for n, (c, a) in table.items() if c.__name__ in info['classes'])
    checkpoints = sorted((c for c in all_checkpoints().values() if c.family == family), key=lambda c: c.name)
    entries = [c for c in checkpoints if not c.name.startswith('test-')]
    first = entries[0]
    lines = [
        f'# {info["title"]}',
        '',
        '<!-- Generated by tools/gen_model_cards.py from backbones/zoo.py, the ARCHS tables and model_cards/sections/; do not edit. -->',
        '',
        f'{info["paper"]}: [paper]({first.paper}), [original code]({first.code}). '
        f'Weights licence: {", ".join(sorted({c.license for c in entries}))} (per checkpoint below).',
        '',
        '## Variants',
        '',
        f'Parameters: backbone only (no classification head), default `out_indices`. GMACs: one '
        f'{FLOPS_SIZE}×{FLOPS_SIZE} image, measured with `torch.utils.flop_counter` on the meta device, and '
        f'with mmengine\'s `FlopAnalyzer` (which skips the attention products of '
        f'`scaled_dot_product_attention` but counts norms; `tools/gen_model_cards.py --measure-mmengine`).',
        '',
        '| backbone | class | `arch=` | params | GMACs @224 | GMACs @224 (mmengine) | out channels | strides '
        '| default checkpoint |',
        '|-|-|-|-|-|-|-|-|-|',
    ]
    usage_example = None
    for name, cls, arch in variants:
        params, gmacs, feature_info = measure(cls, arch)
        channels = [d['channels'] for d in feature_info]
        strides = [d['stride'] for d in feature_info]
        default = DEFAULT_CHECKPOINTS.get(name, '-')
        mm = mmengine_table().get(name)
        mm_text = f'{mm:.2f}' if mm is not None else 'not measured'
        lines.append(f'| `{name}` | `{cls.__name__}` | `{arch}` | {params / 1e6:.2f} M | {gmacs:.2f} | '
                     f'{mm_text} | {channels} | {strides} | `{default}` |')
        if usage_example is None:
            usage_example = (cls.__name__, name, arch, default, channels)
    lines += [
        '',
        '## Checkpoints',
        '',
        'Sources in the order they are tried (manual = a web page to download by hand, then '
        '`backbones download NAME --from-file FILE`). Hash status: `sha256 prefix` = the 8-hex prefix in '
        'the published file name is checked; `trust on first use` = no hash was ever published, so the '
        'sha256 of your first download is recorded in the cache and checked on every later use.',
        '',
        '| checkpoint | backbone | trained on | published result | sources (layout, hash status) | licence |',
        '|-|-|-|-|-|-|',
    ]
    for entry in entries:
        lines.append(f'| `{entry.name}` | `{entry.backbone}` | {entry.task}, {entry.dataset} | '
                     f'{_metrics(entry)} | {_sources(entry)} | {entry.license} |')
    notes = [e for e in entries if e.notes or e.arch_overrides]
    if notes:
        lines += ['', '## Notes', '']
        for entry in notes:
            extra = (f' Trained with `{dict(entry.arch_overrides)}` (official argument names).'
                     if entry.arch_overrides else '')
            lines.append(f'- `{entry.name}`: {entry.notes}{extra}')
    section = SECTIONS / f'{family}.md'   # hand-written: behaviour, fidelity evidence, configs, speed
    if section.is_file():
        lines += ['', section.read_text().strip()]
    lines += ['', _mechanisms(family)]
    lines += ['', _usage(family, *usage_example[:4], usage_example[4])]
    return '\n'.join(lines).rstrip() + '\n'


def _mechanisms(family: str) -> str:
    """The family-agnostic mechanisms with this family's ready configs (found in configs/)."""
    configs = Path(__file__).resolve().parents[1] / 'configs'
    arc = sorted(p.name for p in (configs / family / 'arc').glob('*.py'))
    demo = sorted(p.name for p in (configs / 'demo').glob(f'*_{family}-demo-*.py'))
    shown = ', '.join(f'`{name}`' for name in arc) or 'none yet'
    demo_shown = ', '.join(f'`{name}`' for name in demo) or 'none'
    return '\n'.join([
        '## Adapters, slimming, memory, search (every family)',
        '',
        f'- **ARC adapters** (`adapter=dict(type=\'ARC\', ...)`): configs `configs/{family}/arc/`: {shown}. Recipe '
        '(paper defaults, ViT-B): bottleneck r = 50, adapter dropout 0.1, attention-side scale s = 0 and '
        'MLP-side s xavier at init, W shared per stage and place; the backbone frozen (BatchNorm in eval); '
        'adapters without weight decay at 3x the neck/head learning rate (`configs/_arc_recipe.py`; the '
        'multiplier is ours, no dense ARC recipe was published); in training the MLP branches and the adapters '
        'are recomputed in backward instead of stored (`recompute=True`; `\'all\'` recomputes the attention '
        'branches too; measured memory in `benchmarks/arc_training_memory.md`). Training writes adapter files; '
        '`backbones merge-adapters` folds them into a plain checkpoint.',
        '- **Scala slimming** (`slimmable=dict(...)`, `backbones.ScalaModel`): one model at widths 0.25-1 '
        '(per stage / branch and, where blocks can be dropped, per depth); `backbones export-width` writes a '
        'natively narrow model equal to the slice.',
        '- **Budgeted search**: `backbones search CONFIG CHECKPOINT --budget ...` on a Scala-trained model.',
        '- **Memory**: `backbones memory`, `lowrank=`, `lean=True`, `backbones fit` (see the README).',
        f'- Demo configs of these mechanisms: {demo_shown}.'])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default=str(Path(__file__).resolve().parents[1] / 'model_cards'))
    parser.add_argument('--check', action='store_true', help='exit 1 if a card differs; write nothing')
    parser.add_argument('--measure-mmengine', action='store_true',
                        help='re-measure every variant with mmengine (minutes) into ' + MMENGINE_FLOPS.name)
    args = parser.parse_args(argv)
    if args.measure_mmengine:
        table = {name: round(measure_mmengine(cls, arch), 4) for name, (cls, arch) in sorted(_zoo().items())}
        MMENGINE_FLOPS.write_text(json.dumps(table, indent=1, sort_keys=True) + '\n')
        print(f'wrote {MMENGINE_FLOPS}')
    out = Path(args.out)
    stale = []
    for family in FAMILIES:
        text = render(family)
        path = out / f'{family}.md'
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
            continue
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f'wrote {path}')
    if stale:
        print('stale model cards (run tools/gen_model_cards.py):', *stale)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
