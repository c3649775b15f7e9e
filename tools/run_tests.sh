#!/usr/bin/env bash
# The test command: set up the environment when needed (seconds when it is there), then run the suite.
#   bash tools/run_tests.sh [pytest args...]      e.g. -m "not slow" for the quick tier
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$repo/tools/setup_env.sh"
cd "$repo"
# 2 cores: one intra-op thread per process avoids the 10-50x oversubscription slowdowns (docs/stack.md, Threads).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
exec "${BACKBONES_VENV:-$repo/.venv}/bin/python" -m pytest tests "$@"
