#!/usr/bin/env python
"""Train any config: python tools/train.py CONFIG [--work-dir D] [--resume [CKPT]] [--amp]
[--cfg-options k=v ...] [--launcher none|pytorch|slurm]. See backbones/runner.py."""
from backbones.runner import train_main

if __name__ == '__main__':
    train_main()
