#!/usr/bin/env python
"""Scala evidence experiment (issue 16), one command:

    python tools/scala_experiment.py [--out work_dirs/scala_experiment] [--tasks det seg pose] [--scale 1.0]

Per task (det: RetinaNet + Twins-PCPVT, seg: Semantic FPN + FocalNet, pose: top-down heatmaps + HRFormer; the
demo configs `configs/demo/*-scala_*`):
    scala     the slimmable model trained ONCE with Scala's four-width step (`backbones.ScalaModel`); its
              `backbones.ScalaValLoop` reports the metric at widths 0.25 / 0.5 / 0.75 / 1;
    separate  a natively narrow model trained from scratch at each width r with the same iterations: the
              plain demo config with the architecture `backbones export-width` gives at r (backbone arch
              narrowed, neck / head `in_channels` adjusted: `slimming.export_model` on an untrained model);
    export    each width of the trained Scala model written by `backbones export-width` and evaluated with
              `tools/test.py` (it must reproduce the Scala metric at that width), its parameters and the
              latency of its backbone at the demo input size (batch 1, 1 thread, median of 5 after 2 warm-up).
Every training / evaluation is a `tools/train.py` / `tools/test.py` subprocess on generated configs with the
schedule scaled by `--scale` (iterations, warm-ups and scheduler bounds) and the data at OUT/data/demo.

Writes OUT/results.md and OUT/results.json (per task and width: Scala metric, separate metric, difference,
exported metric, exported parameters, latency; per task: wall seconds of the Scala run vs the sum of the four
separate runs) and keeps the trained Scala model at OUT/<task>/scala/config.py and
OUT/<task>/scala/checkpoint.pth (state dict + meta; `backbones export-width OUT/<task>/scala/config.py
OUT/<task>/scala/checkpoint.pth --width R --out DIR` exports any trained width). A finished run (its
`run.json`) is reused when the command is repeated with the same OUT and scale; results of tasks not named
in a later command stay in OUT/results.* (each with its own scale).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TASKS = {   # task → (Scala demo config, plain demo config, metric key, backbone input size H×W)
    'det': ('retinanet_twins-demo-scala_demo-shapes.py', 'retinanet_twins-demo_demo-shapes.py', 'coco/bbox_mAP',
            (128, 128)),
    'seg': ('fpn_focalnet-demo-scala_demo-shapes.py', 'fpn_focalnet-demo_demo-shapes.py', 'mIoU', (128, 128)),
    'pose': ('td-hm_hrformer-demo-scala_demo-shapes.py', 'td-hm_hrformer-demo_demo-shapes.py', 'coco/AP', (64, 64)),
}
WIDTHS = (0.25, 0.5, 0.75, 1.0)
DEMO_ROOT = 'data/demo/'


def run(cmd: list[str], log: Path) -> tuple[str, float]:
    """Run a subprocess in the repository (stdout to LOG.out, stderr to LOG); returns (stdout, wall seconds)."""
    start = time.time()
    with open(log.with_suffix('.out'), 'w') as out, open(log, 'w') as err:
        code = subprocess.call(cmd, cwd=REPO, stdout=out, stderr=err)
    if code:
        raise RuntimeError(f'{" ".join(map(str, cmd))} failed (exit {code}); see {log}')
    return log.with_suffix('.out').read_text(), time.time() - start


def _absolute_data(value: Any, data: Path) -> Any:
    """Every string under the config that starts with the demo data root, rooted at `data` instead."""
    if isinstance(value, dict):
        return {k: _absolute_data(v, data) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_absolute_data(v, data) for v in value)
    if isinstance(value, str) and value.startswith(DEMO_ROOT):
        return f'{data}/{value[len(DEMO_ROOT):]}'
    return value


def scaled_config(path: Path, scale: float, data: Path) -> dict:
    """The demo config as a plain dict with its schedule multiplied by `scale` (iterations, scheduler bounds,
    Scala warm-up; at least 4 iterations) and its data under `data`."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(path)).to_dict()
    full = cfg['train_cfg']['max_iters']
    iters = max(4, int(full * scale))

    def rescale(v: int) -> int:
        return v if v >= full else min(iters - 1, round(v * iters / full))

    cfg['train_cfg'].update(max_iters=iters, val_interval=iters)
    cfg['default_hooks']['checkpoint'].update(interval=iters, by_epoch=False)
    for sched in cfg.get('param_scheduler') or []:
        sched['begin'] = rescale(sched.get('begin', 0))
        sched['end'] = iters if sched.get('end', full) >= full else max(sched['begin'] + 1, rescale(sched['end']))
    if 'warmup_iters' in cfg['model']:
        cfg['model']['warmup_iters'] = rescale(cfg['model']['warmup_iters'])
    return _absolute_data(cfg, data)


def write_config(cfg: dict, path: Path) -> Path:
    from mmengine.config import Config
    path.parent.mkdir(parents=True, exist_ok=True)
    Config(cfg).dump(str(path))
    return path


def narrow_config(scala_cfg: dict, plain_cfg: dict, width: float, state: Optional[dict] = None) -> dict:
    """The natively narrow model `export-width` gives at `width`, as a trainable config: `plain_cfg` (data,
    schedule) with its model replaced by the exported task model of `scala_cfg` (untrained: only the
    architecture matters; `state`, the Scala model's state dict, is built when not given)."""
    import copy
    from backbones import slimming
    if state is None:
        from mmengine.config import Config
        from mmengine.registry import MODELS, init_default_scope
        import backbones.registry  # noqa: F401
        init_default_scope(scala_cfg.get('default_scope', 'mmdet'))
        model = MODELS.build(Config(scala_cfg).model)
        state = model.state_dict()
    model_cfg, _, _ = slimming.export_model(scala_cfg['model'], state, width)
    cfg = copy.deepcopy(plain_cfg)
    cfg['model'] = model_cfg
    return cfg


def scalars(work_dir: Path) -> list[dict]:
    runs = sorted(p for p in work_dir.iterdir() if (p / 'vis_data' / 'scalars.json').exists())
    lines = (runs[-1] / 'vis_data' / 'scalars.json').read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def last(records: list[dict], key: str) -> Optional[float]:
    found = [r[key] for r in records if key in r]
    return found[-1] if found else None


def train(config: Path, work: Path, log: Path) -> dict:
    """tools/train.py CONFIG (reused when its run.json says it finished); returns dict(wall_s, checkpoint)."""
    done = work / 'run.json'
    text = config.read_text()
    if done.exists() and json.loads(done.read_text()).get('config_text') == text:
        return json.loads(done.read_text())
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    _, wall = run([sys.executable, str(REPO / 'tools' / 'train.py'), str(config), '--work-dir', str(work)], log)
    ckpt = max(work.glob('iter_*.pth'), key=lambda p: int(p.stem.split('_')[1]))
    info = dict(wall_s=wall, checkpoint=str(ckpt), config=str(config), config_text=text)
    done.write_text(json.dumps(info))
    return info


def backbone_cost(backbone_cfg: dict, size: tuple[int, int], repeats: int = 5, warmup: int = 2) -> dict:
    """Parameters and CPU latency (batch 1, 1 thread, median of `repeats` after `warmup`) of a backbone."""
    import torch
    from backbones._base import BACKBONE_CLASSES
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        kwargs = {k: v for k, v in backbone_cfg.items() if k != 'type'}
        kwargs['init_cfg'] = None
        model = BACKBONE_CLASSES[str(backbone_cfg['type']).split('.')[-1]](**kwargs).eval()
        x = torch.randn(1, 3, *size)
        times = []
        with torch.no_grad():
            for i in range(warmup + repeats):
                start = time.perf_counter()
                model(x)
                if i >= warmup:
                    times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return dict(backbone_params=sum(p.numel() for p in model.parameters()),
                latency_ms=1000 * statistics.median(times))


def experiment(task: str, out: Path, scale: float, data: Path, verify: bool) -> dict:
    import torch
    from mmengine.config import Config
    scala_name, plain_name, key, size = TASKS[task]
    root = out / task
    scala_cfg = scaled_config(REPO / 'configs' / 'demo' / scala_name, scale, data)
    plain_cfg = scaled_config(REPO / 'configs' / 'demo' / plain_name, scale, data)
    iters = scala_cfg['train_cfg']['max_iters']

    # the Scala model, trained once; kept at stable names for other tools
    stable = root / 'scala'
    config = write_config(scala_cfg, root / 'runs' / 'scala.py')
    print(f'[{task}] Scala training, {iters} iterations', flush=True)
    scala_run = train(config, root / 'runs' / 'scala', root / 'runs' / 'scala.log')
    scala_records = scalars(root / 'runs' / 'scala')
    stable.mkdir(parents=True, exist_ok=True)
    shutil.copy(config, stable / 'config.py')
    ckpt = torch.load(scala_run['checkpoint'], map_location='cpu', weights_only=False)
    meta = {k: v for k, v in (ckpt.get('meta') or {}).items() if isinstance(v, (int, float, str))}
    torch.save({'state_dict': ckpt['state_dict'], 'meta': dict(meta, scale=scale, iters=iters)},
               stable / 'checkpoint.pth')
    print(f'[{task}] Scala: {scala_run["wall_s"]:.0f} s; kept {stable}/config.py, checkpoint.pth', flush=True)

    rows, separate_wall = [], 0.0
    for width in WIDTHS:
        # the natively narrow model trained from scratch, same iterations
        sep_cfg = narrow_config(scala_cfg, plain_cfg, width, state=ckpt['state_dict'])
        sep_config = write_config(sep_cfg, root / 'runs' / f'separate-{width:g}.py')
        print(f'[{task}] separate width {width:g}: training {iters} iterations', flush=True)
        sep_run = train(sep_config, root / 'runs' / f'separate-{width:g}', root / 'runs' / f'separate-{width:g}.log')
        separate_wall += sep_run['wall_s']
        separate = last(scalars(root / 'runs' / f'separate-{width:g}'), key)

        # the trained Scala model exported at this width
        export_dir = root / 'export'
        run([sys.executable, '-m', 'backbones', 'export-width', str(stable / 'config.py'),
             str(stable / 'checkpoint.pth'), '--width', f'{width:g}', '--out', str(export_dir), '--trust'],
            root / 'runs' / f'export-{width:g}.log')
        exported_cfg = Config.fromfile(str(export_dir / f'config_width-{width:g}.py'))
        exported_state = torch.load(exported_cfg.load_from, map_location='cpu', weights_only=True)['state_dict']
        row = dict(task=task, width=width, metric=key, scala=last(scala_records, f'{key}@{width:g}'),
                   separate=separate, separate_wall_s=sep_run['wall_s'],
                   exported_params=sum(v.numel() for k, v in exported_state.items()
                                       if not k.endswith(('running_mean', 'running_var', 'num_batches_tracked'))
                                       and '.slim_' not in k),
                   **backbone_cost(exported_cfg.model.backbone.to_dict(), size))
        if verify:
            stdout, _ = run([sys.executable, str(REPO / 'tools' / 'test.py'), str(export_dir / f'config_width-{width:g}.py'),
                             exported_cfg.load_from, '--work-dir', str(root / 'runs' / f'test-{width:g}')],
                            root / 'runs' / f'test-{width:g}.log')
            row['exported'] = json.loads(stdout.strip().splitlines()[-1])[key]
        if row['scala'] is not None and separate is not None:
            row['difference'] = row['scala'] - separate
        rows.append(row)
        print(f'[{task}] width {width:g}: Scala {row["scala"]}, separate {separate}, exported '
              f'{row.get("exported", "-")}, backbone {row["backbone_params"]:,} params, {row["latency_ms"]:.2f} ms',
              flush=True)
    return dict(task=task, iters=iters, scale=scale, scala_wall_s=scala_run['wall_s'],
                separate_wall_s=separate_wall, rows=rows)


def table(results: list[dict]) -> str:
    def fmt(v, digits=4):
        return '-' if v is None else f'{v:.{digits}f}' if isinstance(v, float) else str(v)
    lines = ['| task | width | metric | Scala (one run) | separate | Scala − separate | exported model | '
             'exported params (backbone) | backbone latency (ms) |', '|' + '---|' * 9]
    for res in results:
        for r in res['rows']:
            lines.append(f"| {r['task']} | {r['width']:g} | {r['metric']} | {fmt(r['scala'])} | {fmt(r['separate'])} | "
                         f"{fmt(r.get('difference'))} | {fmt(r.get('exported'))} | {r['exported_params']:,} "
                         f"({r['backbone_params']:,}) | {r['latency_ms']:.2f} |")
    lines += ['', '| task | iterations (scale) | Scala training (s) | four separate trainings (s) | ratio |',
              '|---|---|---|---|---|']
    for res in results:
        lines.append(f"| {res['task']} | {res['iters']} ({res['scale']:g}) | {res['scala_wall_s']:.0f} | "
                     f"{res['separate_wall_s']:.0f} | {res['scala_wall_s'] / res['separate_wall_s']:.2f} |")
    return '\n'.join(lines)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='work_dirs/scala_experiment')
    parser.add_argument('--tasks', nargs='+', choices=sorted(TASKS), default=['det', 'seg', 'pose'])
    parser.add_argument('--scale', type=float, default=1.0, help="multiplies every config's iterations")
    parser.add_argument('--no-verify', action='store_true',
                        help='skip evaluating the exported models with tools/test.py')
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    from backbones.demo_data import make_demo_data
    data = make_demo_data(out / 'data' / 'demo').resolve()
    saved = out / 'results.json'      # tasks not run this time keep their earlier results (and scale)
    results = [r for r in (json.loads(saved.read_text()) if saved.exists() else []) if r['task'] not in args.tasks]
    for task in args.tasks:
        results.append(experiment(task, out, args.scale, data, not args.no_verify))
        results.sort(key=lambda r: list(TASKS).index(r['task']))
        saved.write_text(json.dumps(results, indent=1))
        (out / 'results.md').write_text(table(results) + '\n')
    print(table(results))


if __name__ == '__main__':
    main()
