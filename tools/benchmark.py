#!/usr/bin/env python
"""Thin wrapper: `python tools/benchmark.py ARGS` = `python -m backbones.benchmark ARGS` (backbones/benchmark.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from backbones.benchmark import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
