#!/usr/bin/env python
"""Scala evidence experiment (issue 16), one command:

    python tools/scala_experiment.py [--out work_dirs/scala_experiment] [--tasks det seg pose] [--scale 1.0]
                                     [--seeds 0 1 2] [--val 240] [--teacher full] [--set KEY=VALUE ...]

Per task (det: RetinaNet + Twins-PCPVT, seg: Semantic FPN + FocalNet, pose: top-down heatmaps + HRFormer; the
demo configs `configs/demo/*-scala_*`) and per seed (`randomness.seed` of every run and the ScalaModel's width
draws):
    scala     the slimmable model trained ONCE with Scala's four-width step (`backbones.ScalaModel`); its
              `backbones.ScalaValLoop` reports the metric at widths 0.25 / 0.5 / 0.75 / 1;
    separate  a natively narrow model trained from scratch at each width r with the same iterations: the
              plain demo config with the architecture `backbones export-width` gives at r (backbone arch
              narrowed, neck / head `in_channels` adjusted: `slimming.export_model` on an untrained model);
    export    each width of the trained Scala model written by `backbones export-width` and evaluated with
              `tools/test.py` (it must reproduce the Scala metric at that width); for seed 0 also its
              parameters and the latency of its backbone at the demo input size (batch 1, 1 thread, median of 5
              after 2 warm-up).
Every training / evaluation is a `tools/train.py` / `tools/test.py` subprocess on generated configs with the
schedule scaled by `--scale` (iterations, warm-ups and scheduler bounds) and the data at OUT/data/demo: the
demo training set (96 images) and `--val` validation images (the demo's 24 hold 13 pose instances, so one
instance moves keypoint AP by several points; 240 make the metrics fine enough to compare at 1 point).

Writes OUT/results.md and OUT/results.json (per task, seed and width: Scala metric, separate metric,
difference, exported metric; per task and width: parameters and latency of the exported model; per task and
seed: wall seconds of the Scala run vs the sum of the four separate runs; the table gives the mean and the
standard deviation over seeds) from every finished run under OUT (each writes OUT[/seed<S>]/<task>/result-*.json,
so runs of other or concurrent commands count too) and keeps seed 0's trained Scala model at
OUT/<task>/scala/config.py and OUT/<task>/scala/checkpoint.pth (seed S: OUT/seed<S>/<task>/scala/; state dict +
meta; `backbones export-width OUT/<task>/scala/config.py OUT/<task>/scala/checkpoint.pth --width R --out DIR`
exports any trained width). A finished training (its `run.json`) is reused when the command is repeated with
the same OUT, scale, seed and data.

Variants of the Scala training (`--teacher full`, `--set backbone.slimmable.step=0.25`, `--set
loss_weights.smallest=2`: ScalaModel keys, dotted into nested dicts) are runs of their own, named by their options
(OUT/<task>/scala-<variant>, result-<variant>.json) beside the config's, and compared with the same
separately trained models.
"""
from __future__ import annotations

import argparse
import ast
import json
import re
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


def scaled_config(path: Path, scale: float, data: Path, seed: Optional[int] = None) -> dict:
    """The demo config as a plain dict with its schedule multiplied by `scale` (iterations, scheduler bounds,
    Scala warm-up; at least 4 iterations), its data under `data` and, given a `seed`, that seed for the run
    (`randomness`) and for a ScalaModel's width draws."""
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
    if seed is not None:
        cfg['randomness'] = dict(seed=seed)
        if cfg['model'].get('type') == 'backbones.ScalaModel':
            cfg['model']['seed'] = seed
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


def variant_name(options: Optional[dict]) -> str:
    """A Scala variant's name: '' for the config's own run, the teacher alone for a teacher option (as in
    earlier results: 'full'), else 'key=value,...' in the given order."""
    if not options:
        return ''
    if list(options) == ['teacher']:
        return str(options['teacher'])
    return ','.join(f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}' for k, v in options.items())


def _file_name(variant: str) -> str:
    return re.sub(r'[^\w.=-]+', '_', variant)


def parse_options(items: list[str]) -> dict:
    """`--set` items KEY=VALUE → {KEY: value}: a Python literal (number, list, ...), else the text."""
    options = {}
    for item in items:
        key, sep, value = item.partition('=')
        if not sep or not key:
            raise ValueError(f'--set {item!r}: expected KEY=VALUE')
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    return options


def set_options(model_cfg: dict, options: dict) -> None:
    """`options` ({'a.b': value}) written into the ScalaModel config, dotted keys into nested dicts."""
    for key, value in options.items():
        *parents, leaf = key.split('.')
        node = model_cfg
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f'--set {key}: {part!r} is not a dict in the Scala config')
        node[leaf] = value


def experiment(task: str, out: Path, scale: float, data: Path, verify: bool, seed: int = 0,
               measure: bool = True, options: Optional[dict] = None) -> dict:
    """One seed of one task under `out`; `measure`: parameters and latency of each exported width;
    `options` ({dotted ScalaModel key: value}, e.g. teacher): a variant of the Scala training (None: the
    config's), its runs apart from the config's own (`scala-<variant>`) while the separate runs
    are shared."""
    import torch
    from mmengine.config import Config
    scala_name, plain_name, key, size = TASKS[task]
    root = out / task
    scala_cfg = scaled_config(REPO / 'configs' / 'demo' / scala_name, scale, data, seed)
    plain_cfg = scaled_config(REPO / 'configs' / 'demo' / plain_name, scale, data, seed)
    iters = scala_cfg['train_cfg']['max_iters']
    options = dict(options or {})
    set_options(scala_cfg['model'], options)
    variant = variant_name(options)
    name = f'scala-{_file_name(variant)}' if variant else 'scala'

    # the Scala model, trained once; kept at stable names for other tools
    stable = root / name
    config = write_config(scala_cfg, root / 'runs' / f'{name}.py')
    print(f'[{task} seed {seed}] {name} training, {iters} iterations', flush=True)
    scala_run = train(config, root / 'runs' / name, root / 'runs' / f'{name}.log')
    scala_records = scalars(root / 'runs' / name)
    stable.mkdir(parents=True, exist_ok=True)
    shutil.copy(config, stable / 'config.py')
    ckpt = torch.load(scala_run['checkpoint'], map_location='cpu', weights_only=False)
    meta = {k: v for k, v in (ckpt.get('meta') or {}).items() if isinstance(v, (int, float, str))}
    torch.save({'state_dict': ckpt['state_dict'], 'meta': dict(meta, scale=scale, iters=iters, seed=seed)},
               stable / 'checkpoint.pth')
    print(f'[{task} seed {seed}] Scala: {scala_run["wall_s"]:.0f} s; kept {stable}/config.py, checkpoint.pth',
          flush=True)

    rows, separate_wall = [], 0.0
    for width in WIDTHS:
        # the natively narrow model trained from scratch, same iterations
        sep_cfg = narrow_config(scala_cfg, plain_cfg, width, state=ckpt['state_dict'])
        sep_config = write_config(sep_cfg, root / 'runs' / f'separate-{width:g}.py')
        print(f'[{task} seed {seed}] separate width {width:g}: training {iters} iterations', flush=True)
        sep_run = train(sep_config, root / 'runs' / f'separate-{width:g}', root / 'runs' / f'separate-{width:g}.log')
        separate_wall += sep_run['wall_s']
        separate = last(scalars(root / 'runs' / f'separate-{width:g}'), key)

        # the trained Scala model exported at this width
        export_dir = root / name.replace('scala', 'export')
        run([sys.executable, '-m', 'backbones', 'export-width', str(stable / 'config.py'),
             str(stable / 'checkpoint.pth'), '--width', f'{width:g}', '--out', str(export_dir), '--trust'],
            root / 'runs' / f'{name}-export-{width:g}.log')
        exported_cfg = Config.fromfile(str(export_dir / f'config_width-{width:g}.py'))
        row = dict(task=task, seed=seed, teacher=options.get('teacher'), variant=variant, width=width,
                   metric=key,
                   scala=last(scala_records, f'{key}@{width:g}'),
                   separate=separate, separate_wall_s=sep_run['wall_s'])
        if measure:
            exported_state = torch.load(exported_cfg.load_from, map_location='cpu', weights_only=True)['state_dict']
            row['exported_params'] = sum(v.numel() for k, v in exported_state.items()
                                         if not k.endswith(('running_mean', 'running_var', 'num_batches_tracked'))
                                         and '.slim_' not in k)
            row.update(backbone_cost(exported_cfg.model.backbone.to_dict(), size))
        if verify:
            test_dir = root / 'runs' / f'{name}-test-{width:g}'
            stdout, _ = run([sys.executable, str(REPO / 'tools' / 'test.py'),
                             str(export_dir / f'config_width-{width:g}.py'), exported_cfg.load_from,
                             '--work-dir', str(test_dir)], root / 'runs' / f'{name}-test-{width:g}.log')
            row['exported'] = json.loads(stdout.strip().splitlines()[-1])[key]
        if row['scala'] is not None and separate is not None:
            row['difference'] = row['scala'] - separate
        rows.append(row)
        print(f'[{task} seed {seed}] width {width:g}: Scala {row["scala"]}, separate {separate}, exported '
              f'{row.get("exported", "-")}', flush=True)
    return dict(task=task, seed=seed, teacher=options.get('teacher'), variant=variant, iters=iters, scale=scale,
                scala_wall_s=scala_run['wall_s'],
                separate_wall_s=separate_wall, rows=rows)


# the goal: every width within this much of its separately trained model (metric units: mAP / AP are
# fractions, mIoU is in percent)
ONE_POINT = {'coco/bbox_mAP': 0.01, 'mIoU': 1.0, 'coco/AP': 0.01}


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def table(results: list[dict]) -> str:
    """Per task and width: the mean ± standard deviation over seeds of the Scala and separate metrics and of
    their difference, each seed's difference, whether the mean difference meets the goal; cost per seed."""
    lines = ['| task | Scala variant | width | metric | seeds | Scala | separate | Scala − separate (mean ± sd) | '
             'per seed | within 1 point | exported = Scala | exported params (backbone) | backbone latency (ms) |',
             '|' + '---|' * 13]
    met = total = 0
    for task, variant in sorted({(r['task'], _variant(r)) for r in results},
                                key=lambda k: (list(TASKS).index(k[0]), k[1])):
        runs = [r for r in results if r['task'] == task and _variant(r) == variant]
        cost_runs = [r for r in results if r['task'] == task]
        for i, width in enumerate(WIDTHS):
            cells = [r['rows'][i] for r in runs if len(r['rows']) > i]
            done = [c for c in cells if c.get('difference') is not None]
            if not done:
                continue
            key = done[0]['metric']
            scala, separate = _mean_std([c['scala'] for c in done]), _mean_std([c['separate'] for c in done])
            diff = _mean_std([c['difference'] for c in done])
            ok = diff[0] >= -ONE_POINT.get(key, 0.01)
            met, total = met + ok, total + 1
            per_seed = ' '.join(f"{c['difference']:+.3f}" for c in done)
            exact = all(c.get('exported') == c['scala'] for c in done if 'exported' in c)
            cost = next((r['rows'][i] for r in cost_runs if 'exported_params' in r['rows'][i]), None)
            lines.append(
                f"| {task} | {variant or 'config'} | {width:g} | {key} | {len(done)} | "
                f"{scala[0]:.4f} ± {scala[1]:.4f} | {separate[0]:.4f} ± {separate[1]:.4f} | "
                f"{diff[0]:+.4f} ± {diff[1]:.4f} | "
                f"{per_seed} | {'yes' if ok else 'no'} | "
                f"{'yes' if exact else 'NO'} | "
                + (f"{cost['exported_params']:,} ({cost['backbone_params']:,}) | {cost['latency_ms']:.2f} |"
                   if cost else '- | - |'))
    lines += ['', f'Rows whose mean difference is within 1 point or better: {met} of {total}.', '',
              '| task | Scala variant | seed | iterations (scale) | Scala training (s) | four separate trainings (s) | '
              'ratio |', '|---|---|---|---|---|---|---|']
    for res in results:
        lines.append(f"| {res['task']} | {_variant(res) or 'config'} | {res.get('seed', 0)} | "
                     f"{res['iters']} ({res['scale']:g}) | "
                     f"{res['scala_wall_s']:.0f} | {res['separate_wall_s']:.0f} | "
                     f"{res['scala_wall_s'] / res['separate_wall_s']:.2f} |")
    return '\n'.join(lines)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='work_dirs/scala_experiment')
    parser.add_argument('--tasks', nargs='+', choices=sorted(TASKS), default=['det', 'seg', 'pose'])
    parser.add_argument('--scale', type=float, default=1.0, help="multiplies every config's iterations")
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2],
                        help='one Scala training and four separate trainings per seed and task')
    parser.add_argument('--val', type=int, default=240, help='validation images generated (the demo has 24)')
    parser.add_argument('--teacher', choices=['progressive', 'full'], default=None,
                        help="the Scala runs' distillation teacher (default: the config's); other Scala runs "
                             'in the same OUT and the separate runs are kept and reused')
    parser.add_argument('--set', nargs='+', default=[], metavar='KEY=VALUE',
                        help='a Scala variant: ScalaModel config keys (dotted into nested dicts, values as '
                             'Python literals), e.g. backbone.slimmable.step=0.25 loss_weights.smallest=2')
    parser.add_argument('--no-verify', action='store_true',
                        help='skip evaluating the exported models with tools/test.py')
    args = parser.parse_args(argv)
    if args.val < 1 or len(set(args.seeds)) != len(args.seeds):
        parser.error('--val must be >= 1 and --seeds distinct')
    try:
        options = parse_options(args.set)
    except ValueError as err:
        parser.error(str(err))
    if args.teacher is not None:
        options['teacher'] = args.teacher
    out = Path(args.out).resolve()
    from backbones.demo_data import make_demo_data
    data = make_demo_data(out / 'data' / f'demo-val{args.val}', val=args.val).resolve()
    for task in args.tasks:
        for seed in args.seeds:
            where = out if seed == 0 else out / f'seed{seed}'
            result = experiment(task, where, args.scale, data, not args.no_verify, seed,
                                measure=seed == 0 and not options, options=options)
            name = _file_name(result['variant']) or 'config'
            (where / task / f'result-{name}.json').write_text(json.dumps(result, indent=1))
            results = collect(out)
            (out / 'results.json').write_text(json.dumps(results, indent=1))
            (out / 'results.md').write_text(table(results) + '\n')
    print(table(collect(out)))


def _variant(result: dict) -> str:
    """A run's Scala variant, '' for the config's own (older result files name only a teacher)."""
    return result.get('variant') or result.get('teacher') or ''


def collect(out: Path) -> list[dict]:
    """Every finished (task, seed, variant) run under `out` (its result-*.json, written when it ends; runs of
    other commands and of concurrent ones included), in table order."""
    results = [json.loads(f.read_text()) for f in sorted(out.glob('**/result-*.json'))]
    return sorted(results, key=lambda r: (list(TASKS).index(r['task']), _variant(r), r.get('seed', 0)))


if __name__ == '__main__':
    main()
