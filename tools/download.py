#!/usr/bin/env python
"""Thin wrapper over `backbones list / download / verify / where` (backbones/cli.py), for checkouts.

Usage: python tools/download.py list | download NAME... | download --family F | verify | where [NAME]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from backbones.cli import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
