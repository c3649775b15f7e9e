#!/usr/bin/env bash
# Distributed training with torchrun on one or several nodes (CPU: gloo; GPU: nccl).
#   bash tools/dist_train.sh CONFIG NPROC [train.py args...]
# Multi-node: set NNODES, NODE_RANK and MASTER_ADDR (same MASTER_PORT on every node), e.g.
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 MASTER_PORT=29500 bash tools/dist_train.sh CFG 8
# On one node a free port is picked automatically unless MASTER_PORT is set. PYTHON picks the interpreter
# (default: python on PATH, e.g. the activated .venv).
set -euo pipefail
CONFIG=$1; NPROC=$2; shift 2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
if [ -z "${MASTER_PORT:-}" ]; then
  MASTER_PORT=$("${PYTHON:-python}" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
fi
here=$(cd "$(dirname "$0")" && pwd)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec "${PYTHON:-python}" -m torch.distributed.run --nnodes="$NNODES" --node_rank="$NODE_RANK" \
  --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT" --nproc_per_node="$NPROC" \
  "$here/train.py" "$CONFIG" --launcher pytorch "$@"
