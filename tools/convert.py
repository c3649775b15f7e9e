#!/usr/bin/env python
"""Thin wrapper: `python tools/convert.py ARGS` = `backbones convert ARGS` (backbones/cli.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from backbones.cli import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main(['convert', *sys.argv[1:]]))
