#!/usr/bin/env python
"""Transfer experiment for ARC adapters (issue 15), one command:

    python tools/transfer_experiment.py [--out work_dirs/transfer] [--tasks det seg pose] [--scale 1.0]

Per task (det: RetinaNet + FocalNet, seg: Semantic FPN + Twins-SVT, pose: top-down heatmaps + S3; also
pose-hrformer and pose-twins, run when named with --tasks; the demo configs): pretrain on the demo data, then adapt to the SHIFTED demo task (same classes, checkerboard
textures, other class colours: `tools/make_demo_data.py --shifted`) from that checkpoint with
    full     full fine-tuning (the plain demo config),
    linear   head-only / linear probe (backbone frozen: frozen_stages = last stage, BatchNorm in eval),
    arc      ARC adapters (the demo ARC config: bottleneck 8),
    lora     LoRA on the same layers ARC folds into, rank chosen for a parameter count close to ARC's,
and, as a reference, the pretrained model evaluated on the shifted task without adaptation. Every run is a
`tools/train.py` / `tools/test.py` subprocess. `--scale` multiplies every config's iteration count.

Writes OUT/results.md and OUT/results.json: metric, trainable parameters (in the backbone / in total), median
step time, peak training memory (max RSS of the training process; includes the interpreter and libraries,
so on a CPU the ratios understate the differences), and the size of the file a task needs on top of the
base (full: the whole model; linear: neck + head; arc / lora: the adapter file the run wrote).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TASKS = {   # task → (plain demo config, ARC demo config, metric key)
    'det': ('retinanet_focalnet-demo_demo-shapes.py', 'retinanet_focalnet-demo-arc_demo-shapes.py', 'coco/bbox_mAP'),
    'seg': ('fpn_twins-demo_demo-shapes.py', 'fpn_twins-demo-arc_demo-shapes.py', 'mIoU'),
    'pose': ('td-hm_s3-demo_demo-shapes.py', 'td-hm_s3-demo-arc_demo-shapes.py', 'coco/AP'),
    'pose-hrformer': ('td-hm_hrformer-demo_demo-shapes.py', 'td-hm_hrformer-demo-arc_demo-shapes.py', 'coco/AP'),
    'pose-twins': ('td-hm_twins-demo_demo-shapes.py', 'td-hm_twins-demo-arc_demo-shapes.py', 'coco/AP'),
}
DEFAULT_TASKS = ('det', 'seg', 'pose')
METHODS = ('full', 'linear', 'arc', 'lora')
LOG_EVERY_ITER = ['default_hooks.logger.interval=1', 'log_processor.window_size=1']


def run(cmd: list[str], cwd: Path, log: Path) -> tuple[str, int]:
    """Run a subprocess (stderr to `log`); returns (its stdout, its peak RSS in bytes)."""
    stdout_file = log.with_suffix('.out')
    with open(stdout_file, 'w') as out, open(log, 'w') as err:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f'{" ".join(map(str, cmd))} failed; see {log}')
    return stdout_file.read_text(), usage.ru_maxrss * 1024


def scalar_records(work_dir: Path) -> list[dict]:
    runs = sorted(p for p in work_dir.iterdir() if (p / 'vis_data' / 'scalars.json').exists())
    lines = (runs[-1] / 'vis_data' / 'scalars.json').read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def options_for(method: str) -> list[str]:
    if method == 'linear':
        return ['model.backbone.frozen_stages=3', 'model.backbone.norm_eval=True']
    return []


def count_parameters(config: Path, options: list[str]) -> dict:
    """Trainable parameters (backbone, total) and the bytes of a full / head-only state dict."""
    from mmengine.config import DictAction

    from backbones.runner import build_model
    parser = argparse.ArgumentParser()
    parser.add_argument('--options', nargs='*', action=DictAction, default={})
    cfg_options = parser.parse_args(['--options', *options]).options if options else None
    model = build_model(str(config), cfg_options).train()
    sd = model.state_dict()
    return dict(
        backbone=sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and n.startswith('backbone.')),
        backbone_total=sum(p.numel() for n, p in model.named_parameters()
                           if n.startswith('backbone.') and not ('adapter_shared' in n or '_tap.inner' in n
                                                                 or '.lora.' in n)),
        total=sum(p.numel() for p in model.parameters() if p.requires_grad),
        full_bytes=sum(v.numel() * v.element_size() for v in sd.values()),
        head_bytes=sum(v.numel() * v.element_size() for k, v in sd.items() if not k.startswith('backbone.')))


def lora_rank(arc_cfg: Path, arc_trainable: int) -> int:
    """The LoRA rank whose trainable backbone parameters come closest to ARC's (linear in the rank)."""
    per_rank = count_parameters(arc_cfg, ['model.backbone.adapter.type=LoRA', 'model.backbone.adapter.bottleneck=1'])
    return max(1, round(arc_trainable / per_rank['backbone']))


def experiment(task: str, out: Path, scale: float, cwd_base: Path, cwd_shift: Path) -> list[dict]:
    from mmengine.config import Config
    plain_name, arc_name, key = TASKS[task]
    plain_cfg, arc_cfg = REPO / 'configs' / 'demo' / plain_name, REPO / 'configs' / 'demo' / arc_name
    iters = max(4, int(Config.fromfile(str(plain_cfg)).train_cfg.max_iters * scale))
    schedule = [f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
                f'default_hooks.checkpoint.interval={iters}', *LOG_EVERY_ITER]
    root = out / task
    root.mkdir(parents=True, exist_ok=True)
    py, train, test = sys.executable, str(REPO / 'tools' / 'train.py'), str(REPO / 'tools' / 'test.py')

    pre = root / 'pretrain'
    if not (pre / f'iter_{iters}.pth').exists():
        print(f'[{task}] pretraining {plain_name} for {iters} iterations', flush=True)
        run([py, train, str(plain_cfg), '--work-dir', str(pre), '--cfg-options', *schedule], cwd_base,
            root / 'pretrain.log')
    base = pre / f'iter_{iters}.pth'
    rows = []
    stdout, _ = run([py, test, str(plain_cfg), str(base), '--trust', str(pre), '--work-dir', str(root / 'zero')],
                    cwd_shift, root / 'zero-shot.log')
    rows.append(dict(task=task, method='no adaptation', metric=json.loads(stdout.strip().splitlines()[-1])[key]))

    arc_counts = count_parameters(arc_cfg, [])
    rank = lora_rank(arc_cfg, arc_counts['backbone'])
    for method in METHODS:
        config = arc_cfg if method in ('arc', 'lora') else plain_cfg
        options = options_for(method)
        if method == 'lora':
            options = ['model.backbone.adapter.type=LoRA', f'model.backbone.adapter.bottleneck={rank}']
        work = root / method
        print(f'[{task}] {method}: adapting for {iters} iterations', flush=True)
        start = time.time()
        _, rss = run([py, train, str(config), '--work-dir', str(work), '--trust', str(pre),
                      '--cfg-options', *schedule, f'load_from={base}', *options], cwd_shift, root / f'{method}.log')
        records = scalar_records(work)
        times = [r['time'] for r in records if 'time' in r and r.get('step', 0) > 5]
        counts = count_parameters(config, options)
        if method in ('arc', 'lora'):
            file_bytes = (work / 'adapters_final.pth').stat().st_size
        else:
            file_bytes = counts['full_bytes'] if method == 'full' else counts['head_bytes']
        rows.append(dict(task=task, method=method + (f' (rank {rank})' if method == 'lora' else ''),
                         metric=[r for r in records if key in r][-1][key],
                         backbone_trainable=counts['backbone'], backbone_params=counts['backbone_total'],
                         trainable=counts['total'], step_s=statistics.median(times) if times else None,
                         peak_rss_mb=rss / 2 ** 20, file_kb=file_bytes / 1024, wall_s=time.time() - start))
    return rows


def table(rows: list[dict], keys: dict[str, str]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f'{v:.4g}'
        return '-' if v is None else str(v)
    lines = ['| task | method | metric | backbone trainable | total trainable | step (s) | peak RSS (MiB) '
             '| task file (KiB) |', '|' + '---|' * 8]
    for r in rows:
        share = (f"{r['backbone_trainable']:,} ({100 * r['backbone_trainable'] / r['backbone_params']:.2f} %)"
                 if 'backbone_trainable' in r else '-')
        trainable = f"{r['trainable']:,}" if 'trainable' in r else '-'
        lines.append(f"| {r['task']} | {r['method']} | {keys[r['task']]} {fmt(r['metric'])} | {share} | "
                     f"{trainable} | {fmt(r.get('step_s'))} | {fmt(r.get('peak_rss_mb'))} | "
                     f"{fmt(r.get('file_kb'))} |")
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='work_dirs/transfer')
    parser.add_argument('--tasks', nargs='+', choices=sorted(TASKS), default=list(DEFAULT_TASKS))
    parser.add_argument('--scale', type=float, default=1.0, help='multiplies every config\'s max_iters')
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    from backbones.demo_data import make_demo_data
    cwd_base, cwd_shift = out / 'base', out / 'shifted'
    make_demo_data(cwd_base / 'data' / 'demo')
    make_demo_data(cwd_shift / 'data' / 'demo', shifted=True)
    rows = []
    for task in args.tasks:
        rows += experiment(task, out, args.scale, cwd_base, cwd_shift)
        (out / 'results.json').write_text(json.dumps(rows, indent=1))
    text = table(rows, {t: TASKS[t][2] for t in TASKS})
    (out / 'results.md').write_text(text + '\n')
    print(text)


if __name__ == '__main__':
    main()
