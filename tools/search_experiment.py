#!/usr/bin/env python
"""Search evidence (issue 18), one command:

    python tools/search_experiment.py [--out work_dirs/search_experiment] [--tasks det seg pose]
                                      [--budgets 0.6 0.4 0.25] [--kind macs] [--population 16] [--generations 4]
                                      [--ranks 1 0.75 0.5]

Per task, one family each (det: RetinaNet + Twins-SVT, seg: Semantic FPN + FocalNet, pose: top-down heatmaps +
HRFormer — the Scala demo configs), a Scala-trained supernet: `--supernets DIR` holding DIR/<task>/scala/
checkpoint.pth (what tools/scala_experiment.py keeps), else trained here with tools/train.py. Then, per
budget (a fraction of the full network's cost of `--kind`), `backbones search` finds the best sub-network
(per-stage widths, depths) and compares it with the uniformly narrowed network of the same budget (the
widest single width within it): validation metric with inherited weights, cost by the stated model, and the
benchmark's measurement of both exported networks (median latency, 1 thread; steady peak activation memory).

`--ranks`: the same supernet loaded into low-rank layers (`lowrank=dict(ratio=1.0)`: its weights factorised by
SVD at load, full rank = the same network) and searched with a rank ratio per stage as one more dimension
(MCUFormer's space); each budget is searched both ways, widths/depths only and with ranks, the rows labelled.

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


def lowrank_child(config: Path, where: Path) -> Path:
    """A child of `config` whose backbone holds low-rank layers at full rank (`lowrank=dict(ratio=1.0)`)."""
    where.mkdir(parents=True, exist_ok=True)
    child = where / f'{config.stem}_lowrank.py'
    child.write_text(f"_base_ = '{config}'\nmodel = dict(backbone=dict(lowrank=dict(ratio=1.0)))\n")
    return child


def lowrank_checkpoint(child: Path, ckpt: Path, where: Path) -> Path:
    """The dense supernet checkpoint in the low-rank layout of `child` (backbone weights factorised by SVD at
    full rank by `load_pretrained`; the rest copied), so that the search loads it strictly."""
    out = where / f'{ckpt.stem}_lowrank.pth'
    if out.exists():
        return out
    import torch

    from backbones import load_pretrained, read_checkpoint
    from backbones.runner import build_model
    state = read_checkpoint(ckpt, trust=True)            # this experiment's own (or scala_experiment's) run
    state = state.get('state_dict', state)
    model = build_model(str(child))
    prefix = 'model.backbone.'
    load_pretrained(model.model.backbone, {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    missing, unexpected = model.load_state_dict({k: v for k, v in state.items() if not k.startswith(prefix)},
                                                strict=False)
    if unexpected or any(not k.startswith(prefix) for k in missing):
        raise RuntimeError(f'{ckpt}: unexpected {unexpected[:5]}, missing outside the backbone '
                           f'{[k for k in missing if not k.startswith(prefix)][:5]}')
    torch.save({'state_dict': model.state_dict(), 'meta': dict(converted_from=str(ckpt))}, out)
    return out


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
    parser.add_argument('--ranks', nargs='+', type=float,
                        help='also search with these rank ratios per stage (low-rank layers, MCUFormer)')
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
        (out / task).mkdir(parents=True, exist_ok=True)
        inputs = {'widths': (REPO / 'configs' / 'demo' / TASKS[task], ckpt, [])}
        if args.ranks:
            child = lowrank_child(REPO / 'configs' / 'demo' / TASKS[task], out / task)
            inputs['ranks'] = (child, lowrank_checkpoint(child, ckpt, out / task), ['--ranks', *map(str, args.ranks)])
        for fraction in args.budgets:
            for space in inputs:
                config, checkpoint, extra = inputs[space]
                target = out / task / (f'{args.kind}-{fraction:g}x' + ('-ranks' if space == 'ranks' else ''))
                start = time.time()
                print(f'[{task}] search at {args.kind}={fraction:g}x ({space})', flush=True)
                run([sys.executable, '-m', 'backbones', 'search', str(config), str(checkpoint),
                     '--budget', f'{args.kind}={fraction:g}x', '--out', str(target), '--population',
                     str(args.population), '--generations', str(args.generations), '--mutations', str(children),
                     '--crossovers', str(children), '--parents', str(max(2, args.population // 4)), '--seed',
                     str(args.seed), '--quiet', *extra], root, target.parent / f'{target.name}.log')
                r = json.loads((target / 'result.json').read_text())
                r.update(task=task, fraction=fraction, kind=args.kind, space=space,
                         seconds=round(time.time() - start, 1),
                         scored=sum(1 for _ in (target / 'candidates_round1.jsonl').open()))
                results.append(r)
                print(f'[{task}] {args.kind}={fraction:g}x ({space}): searched {r["score"]:.4f} vs uniform '
                      f'{r["uniform_score"] if r["uniform_score"] is not None else "-"}', flush=True)
    previous = json.loads((out / 'results.json').read_text()) if (out / 'results.json').exists() else []
    done = {(r['task'], r['kind'], r['fraction'], r.get('space', 'widths')) for r in results}
    results = [r for r in previous if (r['task'], r.get('kind', args.kind), r['fraction'], r.get('space', 'widths'))
               not in done] + results                                            # earlier runs of others kept
    results.sort(key=lambda r: (list(TASKS).index(r['task']), r.get('kind', 'macs'), -r['fraction'],
                                r.get('space', 'widths')))
    (out / 'results.json').write_text(json.dumps(results, indent=1))
    lines = [f'# Budgeted search vs uniform narrowing (demo data; budget = fraction of the full network\'s '
             f'cost; population {args.population}, {args.generations} generations; space "ranks": rank ratios per '
             'stage searched too)', '',
             '| task | budget | space | network | widths | depths | ranks | metric | cost | latency (ms, measured) | '
             'peak activations (MiB, measured) | scored |', '|---' * 12 + '|']
    for r in results:
        kind = r.get('kind', args.kind)
        for label in ('searched', 'uniform'):
            cand = r['winner'] if label == 'searched' else r['uniform']
            space = r.get('space', 'widths')
            if cand is None:
                lines.append(f'| {r["task"]} | {kind}={r["fraction"]:g}x | {space} | uniform | none within budget '
                             '| | | | | | | |')
                continue
            score = r['score'] if label == 'searched' else r['uniform_score']
            cost = (r['costs'] if label == 'searched' else r['uniform_costs'])[kind]
            m = (r.get('measured') or {}).get(label) or {}
            shown = f'{cost / 1e6:.2f}M' if kind in ('macs', 'params') else (
                f'{cost / 2 ** 20:.1f}MiB' if kind == 'memory' else f'{cost:.1f}ms')
            lines.append(f'| {r["task"]} ({r["metric"]}) | {kind}={r["fraction"]:g}x | {space} | {label} | '
                         f'{cand["widths"]} | {cand["depths"] or "-"} | {cand.get("ranks") or "-"} | {score:.4f} | '
                         f'{shown} | '
                         f'{m.get("median_ms", float("nan")):.1f} | {m.get("peak_mem_mib", float("nan")):.1f} | '
                         f'{r["scored"] if label == "searched" else ""} |')
    (out / 'results.md').write_text('\n'.join(lines) + '\n')
    print('\n'.join(lines))
    return 0


if __name__ == '__main__':
    sys.exit(main())
