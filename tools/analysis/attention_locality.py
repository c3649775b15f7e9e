#!/usr/bin/env python
"""Attention locality of a zoo backbone: Mean Attention Distance and normalized entropy per layer/head.

    python tools/analysis/attention_locality.py MODEL [--weights random|pretrained|CKPT] [--images DIR | --demo]
    python tools/analysis/attention_locality.py MODEL --compare CKPT_A CKPT_B [--images DIR | --demo]

MODEL: a zoo name (`backbones list`, e.g. twins-svt-small) or a config file (its `model.backbone`).
--weights: `random` (official init, seeded), `pretrained` (the zoo default checkpoint), or any zoo
checkpoint name / path / URL, including a `tools/train.py` checkpoint (its `backbone.` weights are used;
pass --trust for checkpoints that are not plain tensor files).
Images: --images DIR (all .png/.jpg/.jpeg/.bmp below it), --demo [DIR] (the demo data; written by
tools/make_demo_data.py when missing), or, for a config, its val/test dataset folder. Each image is resized
to --size H W and normalised with the ImageNet mean/std.

Units: `mad_px` = input pixels of the resized image; `mad_norm` = mad_px / image diagonal. Entropy is
normalized by log(number of real keys). FocalNet has no attention: its rows give the effective focal extent
(gate-weighted distance, see backbones/analysis.py). Writes heads.csv/json, layers.csv and PNG plots to --out.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from backbones.analysis import AttentionLocality, summarize  # noqa: E402

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp')
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


# ---- model, weights, images ----------------------------------------------------------------------
def build_model(spec: str) -> tuple[torch.nn.Module, Optional[str], Optional[Any]]:
    """Zoo name or config path → (model, zoo name or None, mmengine config or None)."""
    from backbones._base import BACKBONE_CLASSES
    from backbones._factory import _zoo
    zoo = _zoo()
    if spec in zoo:
        cls, arch = zoo[spec]
        return cls(arch=arch), spec, None
    if not Path(spec).is_file():
        raise SystemExit(f'{spec!r} is neither a zoo name ({", ".join(sorted(zoo))}) nor a config file')
    from mmengine.config import Config
    cfg = Config.fromfile(spec)
    backbone = dict(cfg.model.backbone)
    type_name = str(backbone.pop('type')).split('.')[-1]
    backbone.pop('init_cfg', None)
    if type_name not in BACKBONE_CLASSES:
        raise SystemExit(f'config backbone type {type_name!r} is not one of ours: {sorted(BACKBONE_CLASSES)}')
    cls = BACKBONE_CLASSES[type_name]
    name = next((n for n, (c, a) in zoo.items() if c is cls and a == backbone.get('arch')), None)
    return cls(**backbone), name, cfg


def load_weights(model: torch.nn.Module, weights: str, zoo_name: Optional[str], seed: int, trust: bool) -> str:
    torch.manual_seed(seed)
    if weights == 'random':
        model.init_weights()
        return f'random (seed {seed})'
    from backbones.weights import load_pretrained
    if weights == 'pretrained':
        if zoo_name is None:
            raise SystemExit('--weights pretrained needs a zoo name (or a config whose arch is a zoo variant)')
        from backbones.zoo import default_checkpoint
        weights = default_checkpoint(zoo_name)
    load_pretrained(model, weights, trust=trust)
    return weights


def config_image_folder(cfg: Any) -> Optional[Path]:
    """The val/test dataset's image folder of an OpenMMLab config, when it names one."""
    for loader in ('val_dataloader', 'test_dataloader', 'train_dataloader'):
        dataset = (cfg.get(loader) or {}).get('dataset') if cfg is not None else None
        while isinstance(dataset, dict) and 'dataset' in dataset:
            dataset = dataset['dataset']
        if not isinstance(dataset, dict):
            continue
        prefix = dataset.get('data_prefix') or {}
        sub = prefix.get('img') or prefix.get('img_path') or ''
        folder = Path(dataset.get('data_root') or '') / sub
        if folder.is_dir():
            return folder
    return None


def demo_folder(root: Path) -> Path:
    folder = root / 'images' / 'val'
    if not folder.is_dir():
        from backbones.demo_data import make_demo_data
        make_demo_data(root)
    return folder


def load_images(folder: Path, size: tuple[int, int], limit: int) -> tuple[torch.Tensor, list[str]]:
    """→ (N, 3, H, W) normalised float tensor and the file names (sorted, first `limit`)."""
    import numpy as np
    from PIL import Image
    files = sorted(p for p in folder.rglob('*') if p.suffix.lower() in IMAGE_EXTENSIONS)[:limit]
    if not files:
        raise SystemExit(f'no images ({", ".join(IMAGE_EXTENSIONS)}) under {folder}')
    batch = []
    for path in files:
        image = Image.open(path).convert('RGB').resize((size[1], size[0]), Image.BILINEAR)
        batch.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1))
    images = torch.stack(batch)
    images = (images - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    return images, [str(p) for p in files]


def analyse(model: torch.nn.Module, images: torch.Tensor, batch_size: int, chunk: int) -> list[dict[str, Any]]:
    model.eval()
    with AttentionLocality(model, chunk=chunk) as analysis:
        for start in range(0, images.shape[0], batch_size):
            analysis.run(images[start:start + batch_size])
    return analysis.records()


# ---- output ----------------------------------------------------------------------------------------
def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)


def print_summary(layers: list[dict[str, Any]], title: str) -> None:
    print(f'\n{title}')
    print('MAD in input pixels (and mean as a fraction of the image diagonal); entropy normalized to [0, 1]')
    print(f'{"layer":34s} {"kind":6s} {"str":>3s} {"heads":>5s} {"MAD min":>8s} {"mean":>8s} {"max":>8s} '
          f'{"/diag":>6s} {"entropy":>7s}')
    for s in layers:
        extra = f'  effective extent {s["effective_extent_px"]:.1f}px' if 'effective_extent_px' in s else ''
        print(f'{s["layer"]:34s} {s["kind"]:6s} {s["stride"]:3d} {s["heads"]:5d} {s["mad_px_min"]:8.2f} '
              f'{s["mad_px_mean"]:8.2f} {s["mad_px_max"]:8.2f} {s["mad_norm_mean"]:6.3f} '
              f'{s["entropy_mean"]:7.3f}{extra}')


def plot(rows: list[dict[str, Any]], out: Path, title: str, compare: Optional[list[dict[str, Any]]] = None,
         labels: tuple[str, str] = ('A', 'B')) -> list[Path]:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    focal = rows[0]['kind'] == 'focal'
    sets = [(labels[0], rows)] + ([(labels[1], compare)] if compare else [])
    written = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (label, data), marker in zip(sets, ('o', 'x')):
        ax.scatter([r['depth'] for r in data], [r['mad_px_mean'] for r in data], marker=marker, s=18,
                   label=label if compare else None, alpha=0.8)
        if focal:
            eff = {r['depth']: r['effective_extent_px_mean'] for r in data}
            ax.plot(list(eff), list(eff.values()), label=f'{label} effective extent' if compare else
                    'gate-weighted effective extent')
    ax.set_xlabel('layer (depth, execution order)')
    ax.set_ylabel('level extent (px)' if focal else 'mean attention distance per head (input px)')
    ax.set_title(title)
    if compare or focal:
        ax.legend()
    fig.tight_layout()
    path = out / ('focal_extent_vs_depth.png' if focal else 'mad_vs_depth.png')
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)
    if not focal:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for (label, data), marker in zip(sets, ('o', 'x')):
            sc = ax.scatter([r['mad_px_mean'] for r in data], [r['entropy_mean'] for r in data],
                            c=[r['depth'] for r in data], cmap='viridis', marker=marker, s=18,
                            label=label if compare else None)
        fig.colorbar(sc, ax=ax, label='depth')
        ax.set_xlabel('mean attention distance (input px)')
        ax.set_ylabel('normalized entropy')
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(title)
        if compare:
            ax.legend()
        fig.tight_layout()
        path = out / 'entropy_vs_mad.png'
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def compare_layers(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per layer: both summaries and the differences B − A."""
    b_by_layer = {s['layer']: s for s in b}
    rows = []
    for s in a:
        t = b_by_layer[s['layer']]
        row = dict(layer=s['layer'], depth=s['depth'], kind=s['kind'], stride=s['stride'])
        for key in ('mad_px_mean', 'mad_px_min', 'mad_px_max', 'mad_norm_mean', 'entropy_mean'):
            row[f'{key}_a'], row[f'{key}_b'], row[f'{key}_diff'] = s[key], t[key], t[key] - s[key]
        rows.append(row)
    return rows


def short_weight_name(weights: str) -> str:
    """Legend name of a weight source: 'random', a zoo name, or 'folder/file' of a checkpoint path."""
    path = Path(weights)
    return f'{path.parent.name}/{path.stem}' if path.suffix in ('.pth', '.pt', '.safetensors') else weights


# ---- main ------------------------------------------------------------------------------------------
def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('model', help='zoo name or config file')
    parser.add_argument('--weights', default='random',
                        help="'random', 'pretrained' (zoo default) or a zoo checkpoint name / path / URL")
    parser.add_argument('--compare', nargs=2, metavar=('CKPT_A', 'CKPT_B'),
                        help='compare two weight sources (same syntax as --weights) layer by layer')
    source = parser.add_mutually_exclusive_group()
    source.add_argument('--images', type=Path, help='image folder (searched recursively)')
    source.add_argument('--demo', nargs='?', const=REPO / 'data' / 'demo', type=Path,
                        help='use the demo data (default data/demo; generated when missing)')
    parser.add_argument('--size', type=int, nargs=2, default=(224, 224), metavar=('H', 'W'))
    parser.add_argument('--max-images', type=int, default=32)
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--chunk', type=int, default=1024, help='queries per step (windowed attention: whole windows): bounds memory')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--trust', action='store_true', help='allow full (pickled) checkpoints you trust')
    parser.add_argument('--out', type=Path, default=None, help='output folder (default work_dirs/attention_locality/...)')
    parser.add_argument('--labels', nargs=2, metavar=('NAME_A', 'NAME_B'),
                        help='legend names for --compare plots (default: from the weight sources)')
    parser.add_argument('--no-plots', action='store_true')
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    args = parse_args(argv)
    model, zoo_name, cfg = build_model(args.model)
    if args.images is not None:
        folder = args.images
    elif args.demo is not None:
        folder = demo_folder(args.demo)
    else:
        folder = config_image_folder(cfg)
        if folder is None:
            raise SystemExit('give --images DIR or --demo (no image folder found in a config)')
    images, files = load_images(folder, tuple(args.size), args.max_images)
    tag = zoo_name or Path(args.model).stem
    out = args.out or REPO / 'work_dirs' / 'attention_locality' / tag
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(model=args.model, images=len(files), image_folder=str(folder), size=list(args.size),
                units=dict(mad_px='input pixels of the resized image (token centres at (i + 1/2) * stride)',
                           mad_norm='mad_px / sqrt(H^2 + W^2) of the resized image',
                           entropy='-sum p log p / log(number of real keys), averaged over real queries',
                           std='over images'))
    if model.__class__.__name__ == 'FocalNet':
        meta['note'] = ('FocalNet has no attention. mad_px = extent of each focal level (mean distance of its '
                        'receptive square, or of the whole map for the global level); gate_share = mean |gate| '
                        'share; effective_extent_px = gate-weighted extent; entropy = normalized entropy of the '
                        'gate shares over levels.')
    weights = [args.weights] if args.compare is None else list(args.compare)
    runs = []
    for w in weights:
        torch.manual_seed(args.seed)
        model_w = model if len(runs) == 0 else build_model(args.model)[0]
        label = load_weights(model_w, w, zoo_name, args.seed, args.trust)
        rows = analyse(model_w, images, args.batch_size, args.chunk)
        runs.append((label, rows, summarize(rows)))
    result: dict[str, Any] = dict(meta=meta)
    if args.compare is None:
        label, rows, layers = runs[0]
        meta['weights'] = label
        write_csv(out / 'heads.csv', rows)
        write_csv(out / 'layers.csv', layers)
        result.update(heads=rows, layers=layers)
        print_summary(layers, f'{tag} [{label}] on {len(files)} images {args.size[0]}x{args.size[1]}')
        plots = [] if args.no_plots else plot(rows, out, f'{tag} ({label})')
    else:
        (label_a, rows_a, layers_a), (label_b, rows_b, layers_b) = runs
        meta['weights'] = dict(a=label_a, b=label_b)
        diff = compare_layers(layers_a, layers_b)
        write_csv(out / 'heads_a.csv', rows_a)
        write_csv(out / 'heads_b.csv', rows_b)
        write_csv(out / 'compare_layers.csv', diff)
        result.update(heads_a=rows_a, heads_b=rows_b, compare=diff)
        print(f'\n{tag}: A = {label_a}\n{" " * len(tag)}  B = {label_b}  ({len(files)} images); differences B - A')
        print(f'{"layer":34s} {"kind":6s} {"MAD A":>8s} {"MAD B":>8s} {"dMAD px":>8s} {"d/diag":>7s} '
              f'{"ent A":>6s} {"ent B":>6s} {"d ent":>7s}')
        for r in diff:
            print(f'{r["layer"]:34s} {r["kind"]:6s} {r["mad_px_mean_a"]:8.2f} {r["mad_px_mean_b"]:8.2f} '
                  f'{r["mad_px_mean_diff"]:+8.2f} {r["mad_norm_mean_diff"]:+7.3f} {r["entropy_mean_a"]:6.3f} '
                  f'{r["entropy_mean_b"]:6.3f} {r["entropy_mean_diff"]:+7.3f}')
        names = tuple(args.labels) if args.labels else tuple(short_weight_name(w) for w in args.compare)
        plots = [] if args.no_plots else plot(rows_a, out, f'{tag}: {names[0]} vs {names[1]}', rows_b, names)
    with open(out / ('compare.json' if args.compare else 'heads.json'), 'w') as f:
        json.dump(result, f, indent=1)
    print(f'\nwrote {", ".join(sorted(p.name for p in out.iterdir()))} to {out}')
    result['plots'] = [str(p) for p in plots]
    result['out'] = str(out)
    return result


if __name__ == '__main__':
    main()
