#!/usr/bin/env bash
# Create (or reuse) the project's isolated environment in .venv with the pinned OpenMMLab stack.
#
#   bash tools/setup_env.sh            # idempotent: returns in seconds when the stack is already there
#
# Environment variables:
#   BACKBONES_VENV        where the venv lives (default: <repo>/.venv)
#   BACKBONES_WHEELHOUSE  cache of locally built wheels (default: ~/.cache/backbones/wheelhouse);
#                         a sub-folder per {python, torch, mmcv} so a wheel is never reused on another ABI
#   BACKBONES_TORCH       the torch requirement (default: torch==2.13.0). Users with their own CUDA torch
#                         can create the venv themselves, install torch, then run this script.
#   PYTHON                interpreter used to create the venv (default: python3.11, else python3)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${BACKBONES_VENV:-$repo/.venv}
torch_req=${BACKBONES_TORCH:-torch==2.13.0}
MMCV_VERSION=2.1.0
stamp_inputs="$torch_req mmcv==$MMCV_VERSION mmengine==0.10.7 mmdet==3.3.0 mmsegmentation==1.2.2 mmpose==1.3.2 $(cat "$repo/setup.py" 2>/dev/null | sha256sum | cut -c1-16) v3"
stamp="$venv/.backbones-stack"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_inputs" ] && [ -x "$venv/bin/python" ]; then
  exit 0   # already set up
fi

# One set-up at a time (the demo and the test command may start together): wait, then re-check.
if command -v flock >/dev/null 2>&1; then
  exec 9>"${venv%/}.setup.lock"
  flock 9
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_inputs" ] && [ -x "$venv/bin/python" ]; then
    exit 0   # done by the invocation we waited for
  fi
fi

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
py=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv with $py"
  "$py" -m venv "$venv"
fi
pip() { "$venv/bin/python" -m pip --disable-pip-version-check "$@"; }

pip install -q --upgrade pip wheel
if ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
  log "installing $torch_req"
  pip install -q "$torch_req"
fi
pyver=$("$venv/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
torchver=$("$venv/bin/python" -c 'import torch; print(torch.__version__.replace("+", "_"))')
house=${BACKBONES_WHEELHOUSE:-$HOME/.cache/backbones/wheelhouse}/$pyver-torch$torchver-mmcv$MMCV_VERSION
mkdir -p "$house"

pip install -q "setuptools>=77.0.3,<81" ninja packaging
pip install -q mmengine==0.10.7

if ! ls "$house"/mmcv-$MMCV_VERSION-*.whl >/dev/null 2>&1; then
  log "building mmcv $MMCV_VERSION with ops against torch $torchver (progress below; measured times in the README) into $house"
  src=$(mktemp -d)
  pip install -q "setuptools<70"   # the known-good build pin (docs/stack.md); raised again below
  pip download -q --no-deps --no-binary :all: --no-build-isolation -d "$src" mmcv==$MMCV_VERSION
  tar -xzf "$src"/mmcv-$MMCV_VERSION.tar.gz -C "$src"
  # torch >= 2.14 headers need C++20; mmcv 2.1.0's setup.py hard-codes -std=c++17 (docs/stack.md).
  if "$venv/bin/python" -c 'import sys, torch; v=tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]); sys.exit(0 if v >= (2, 14) else 1)'; then
    sed -i 's/-std=c++17/-std=c++20/g' "$src"/mmcv-$MMCV_VERSION/setup.py
  fi
  # -g0: no debug information in the ~80 objects (Python's own CFLAGS carry -g; the debug info is most of
  # the compile time and the size of the .so). Progress: ninja's "[done/total]" lines, with elapsed time.
  build_log="$src/build.log"
  started=$SECONDS
  if ! (cd "$src"/mmcv-$MMCV_VERSION && CFLAGS="${CFLAGS:-} -g0" CXXFLAGS="${CXXFLAGS:-} -g0" \
        MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
        "$venv/bin/python" -m pip wheel -v --no-build-isolation --no-deps -w "$house" . 2>&1) \
      | tee "$build_log" | awk '
          /^ *\[[0-9]+\/[0-9]+\]/ { n = substr($1, 2, length($1) - 2); split(n, a, "/");
            printf "[setup] mmcv build: %s/%s objects compiled, %d s elapsed\n", a[1], a[2], systime() - t0s; fflush() }
          BEGIN { t0s = systime() }'; then
    echo "mmcv build failed; last lines of $build_log:" >&2; tail -40 "$build_log" >&2; exit 1
  fi
  log "mmcv built in $((SECONDS - started)) s"
  rm -rf "$src"
fi
if ! ls "$house"/xtcocotools-*.whl >/dev/null 2>&1; then
  log "building xtcocotools from source (the binary wheel is ABI-broken against numpy 2)"
  pip install -q numpy cython "setuptools<70"
  pip wheel -q --no-deps --no-build-isolation --no-binary xtcocotools -w "$house" xtcocotools==1.14.3
fi
log "installing the OpenMMLab stack"
pip install -q --find-links "$house" --no-index --no-deps "$house"/mmcv-$MMCV_VERSION-*.whl "$house"/xtcocotools-*.whl
pip install -q mmcv==$MMCV_VERSION --find-links "$house" addict yapf rich termcolor opencv-python numpy pyyaml regex
pip install -q mmdet==3.3.0 mmsegmentation==1.2.2 ftfy regex pycocotools shapely terminaltables scipy tqdm
pip install -q --no-deps mmpose==1.3.2
pip install -q json-tricks munkres matplotlib scipy
pip install -q "setuptools>=77.0.3,<81"
log "installing the package (editable) with its test extras"
pip install -q --no-build-isolation --no-deps -e "$repo"
pip install -q pytest pytest-timeout safetensors filelock transformers onnx onnxruntime
"$venv/bin/python" -c 'import mmcv.ops, mmdet, mmseg, mmengine; import backbones' 
echo "$stamp_inputs" > "$stamp"
log "environment ready: $venv"
