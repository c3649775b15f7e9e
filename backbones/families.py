"""Imports every family module, so that their classes and converters register themselves."""
from . import focalnet, hrformer, s3, twins  # noqa: F401
