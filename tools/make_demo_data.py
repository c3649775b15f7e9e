#!/usr/bin/env python
"""Write the demo dataset (see backbones/demo_data.py):
python tools/make_demo_data.py [--out data/demo] [--train 96] [--val 24] [--size 128]"""
from backbones.demo_data import main

if __name__ == '__main__':
    main()
