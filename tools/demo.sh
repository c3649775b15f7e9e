#!/usr/bin/env bash
# The demo command: set up when needed, generate the demo data, train a detector with a zoo backbone on
# the CPU for a few minutes, evaluate it, and print the COCO bbox mAP.
#   bash tools/demo.sh [det|seg|pose] [extra train.py args...]
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
task=${1:-det}; shift || true
bash "$repo/tools/setup_env.sh"
cd "$repo"
py=${BACKBONES_VENV:-$repo/.venv}/bin/python
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
"$py" tools/make_demo_data.py --out data/demo
case "$task" in
  det)  config=configs/demo/retinanet_focalnet-demo_demo-shapes.py ;;
  seg)  config=configs/demo/fpn_twins-demo_demo-shapes.py ;;
  pose) config=configs/demo/td-hm_hrformer-demo_demo-shapes.py ;;
  *) echo "unknown task $task (det, seg or pose)"; exit 2 ;;
esac
work=work_dirs/demo-$task
"$py" tools/train.py "$config" --work-dir "$work" "$@"
"$py" - "$work" "$task" <<'PY'
import json, pathlib, sys
work, task = pathlib.Path(sys.argv[1]), sys.argv[2]
runs = sorted(p for p in work.iterdir() if p.is_dir() and (p / 'vis_data' / 'scalars.json').exists())
records = [json.loads(l) for l in (runs[-1] / 'vis_data' / 'scalars.json').read_text().splitlines()]
final = [r for r in records if any(k.startswith(('coco/', 'mIoU', 'aAcc')) for k in r)][-1]
key = {'det': 'coco/bbox_mAP', 'seg': 'mIoU', 'pose': 'coco/AP'}[task]
iters = max((r['step'] for r in records if 'loss' in r), default=0)
def fmt(v):
    return f'{v:.4g}' if isinstance(v, float) else str(v)
print(f'\nDemo {task} result after {iters} training iterations: {key} = {fmt(final[key])}')
print('all metrics:', ', '.join(f'{k} {fmt(v)}' for k, v in final.items() if k != 'step'))
PY
