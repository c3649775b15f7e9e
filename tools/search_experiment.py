#!/usr/bin/env python
"""Search evidence (issue 18), one command:

    python tools/search_experiment.py [--out work_dirs/search_experiment] [--tasks det seg pose]
                                      [--budgets 0.6 0.4 0.25] [--kind macs] [--population 16] [--generations 4]

Per task, one family each (det: RetinaNet + Twins-SVT, seg: Semantic FPN + FocalNet, pose: top-down heatmaps +
HRFormer — the Scala demo configs), a Scala-trained supernet: `--supernets DIR` holding DIR/<task>/scala/
checkpoint.pth (what tools/scala_experiment.py keeps), else trained here with tools/train.py. Then, per
budget (a fraction of the full network's cost of `--kind`), `backbones search` finds the best sub-network
(per-stage widths, depths) and compares it with the uniformly narrowed network of the same budget (the
widest single width within it): validation metric with inherited weights, cost by the stated model, and the
benchmark's measurement of both exported networks (median latency, 1 thread; steady peak activation memory).

Writes OUT/results.md and OUT/results.json. The metric is the demo validation set's, which the search
also scores candidates on (AutoFormer searches on a split of the training set; the demo has none spare).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TASKS = {   # task → Scala demo config
    'det': 'retinanet_twins-demo-scala_demo-shapes.py',
    'seg': 'fpn_focalnet-demo-scala_demo-shapes.py',
    'pose': 'td-hm_hrformer-demo-scala_demo-shapes.py',
}


def run(cmd: list[str], cwd: Path, log: Path) -> None:
    with open(log, 'w') as out:
        proc = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise RuntimeError(f'{" ".join(map(str, cmd))} failed; see {log}')


def supernet(task: str, out: Path, supernets: Path | None, root: Path) -> Path:
    if supernets is not None:
        found = supernets / task / 'scala' / 'checkpoint.pth'
        if found.exists():
            return found
    work = out / task / 'supernet'
    ckpt = work / 'checkpoint.pth'
    if not ckpt.exists():
        work.mkdir(parents=True, exist_ok=True)
        print(f'[{task}] training the Scala supernet ({TASKS[task]})', flush=True)
        run([sys.executable, str(REPO / 'tools' / 'train.py'), str(REPO / 'configs' / 'demo' / TASKS[task]),
             '--work-dir', str(work)], root, work / 'train.log')
        last = (work / 'last_checkpoint').read_text().strip()
        Path(last).rename(ckpt)
    return ckpt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default='work_dirs/search_experiment')
    parser.add_argument('--tasks', nargs='+', default=list(TASKS), choices=list(TASKS))
    parser.add_argument('--budgets', nargs='+', type=float, default=[0.6, 0.4, 0.25],
                        help='fractions of the full network\'s cost')
    parser.add_argument('--kind', default='macs', choices=('macs', 'params', 'memory', 'latency'))
    parser.add_argument('--supernets', default='work_dirs/scala_experiment',
                        help='where tools/scala_experiment.py kept its Scala checkpoints (else trained here)')
    parser.add_argument('--population', type=int, default=16)
    parser.add_argument('--generations', type=int, default=4)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    root = out / 'run'
    if not (root / 'data' / 'demo').exists():
        run([sys.executable, str(REPO / 'tools' / 'make_demo_data.py'), '--out', str(root / 'data' / 'demo')],
            out, out / 'demo_data.log')
    supernets = Path(args.supernets).resolve() if args.supernets else None
    results = []
    children = max(1, args.population // 2)
    for task in args.tasks:
        ckpt = supernet(task, out, supernets, root)
        for fraction in args.budgets:
            target = out / task / f'{args.kind}-{fraction:g}x'
            start = time.time()
            print(f'[{task}] search at {args.kind}={fraction:g}x', flush=True)
            run([sys.executable, '-m', 'backbones', 'search', str(REPO / 'configs' / 'demo' / TASKS[task]), str(ckpt),
                 '--budget', f'{args.kind}={fraction:g}x', '--out', str(target), '--population', str(args.population),
                 '--generations', str(args.generations), '--mutations', str(children), '--crossovers', str(children),
                 '--parents', str(max(2, args.population // 4)), '--seed', str(args.seed), '--quiet'],
                root, target.parent / f'{target.name}.log')
            r = json.loads((target / 'result.json').read_text())
            r.update(task=task, fraction=fraction, kind=args.kind, seconds=round(time.time() - start, 1),
                     scored=sum(1 for _ in (target / 'candidates_round1.jsonl').open()))
            results.append(r)
            print(f'[{task}] {args.kind}={fraction:g}x: searched {r["score"]:.4f} vs uniform '
                  f'{r["uniform_score"] if r["uniform_score"] is not None else "-"}', flush=True)
    previous = json.loads((out / 'results.json').read_text()) if (out / 'results.json').exists() else []
    results = [r for r in previous if r['task'] not in args.tasks] + results      # other tasks' earlier runs kept
    results.sort(key=lambda r: (list(TASKS).index(r['task']), -r['fraction']))
    (out / 'results.json').write_text(json.dumps(results, indent=1))
    lines = [f'# Budgeted search vs uniform narrowing (demo data; budget = fraction of the full network\'s '
             f'{args.kind}; population {args.population}, {args.generations} generations)', '',
             '| task | budget | network | widths | depths | metric | ' + args.kind + ' | latency (ms, measured) | '
             'peak activations (MiB, measured) | scored |', '|---' * 10 + '|']
    for r in results:
        for label in ('searched', 'uniform'):
            cand = r['winner'] if label == 'searched' else r['uniform']
            if cand is None:
                lines.append(f'| {r["task"]} | {r["fraction"]:g}x | uniform | none within budget | | | | | | |')
                continue
            score = r['score'] if label == 'searched' else r['uniform_score']
            cost = (r['costs'] if label == 'searched' else r['uniform_costs'])[args.kind]
            m = (r.get('measured') or {}).get(label) or {}
            shown = f'{cost / 1e6:.1f}M' if args.kind in ('macs', 'params') else (
                f'{cost / 2 ** 20:.1f}MiB' if args.kind == 'memory' else f'{cost:.1f}ms')
            lines.append(f'| {r["task"]} ({r["metric"]}) | {r["fraction"]:g}x | {label} | {cand["widths"]} | '
                         f'{cand["depths"] or "-"} | {score:.4f} | {shown} | '
                         f'{m.get("median_ms", float("nan")):.1f} | {m.get("peak_mem_mib", float("nan")):.1f} | '
                         f'{r["scored"] if label == "searched" else ""} |')
    (out / 'results.md').write_text('\n'.join(lines) + '\n')
    print('\n'.join(lines))
    return 0


if __name__ == '__main__':
    sys.exit(main())
