#!/usr/bin/env python
"""Evaluate a checkpoint: python tools/test.py CONFIG CHECKPOINT [--work-dir D] [--cfg-options k=v ...]
[--launcher none|pytorch|slurm]; ARC configs: python tools/test.py CONFIG --adapter FILE (base + adapter
file). See backbones/runner.py."""
from backbones.runner import test_main

if __name__ == '__main__':
    test_main()
