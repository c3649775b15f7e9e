"""`python -m backbones ...` = the `backbones` console command (see backbones/cli.py)."""
import sys

from .cli import main

sys.exit(main())
