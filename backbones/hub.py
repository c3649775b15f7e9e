"""Resolving checkpoint sources to local files (zoo names, URLs, paths).

Interim version: local paths only. The checkpoint zoo (issue 6) replaces this with the table-driven,
verified, resumable downloader.
"""
from __future__ import annotations

import os


def resolve_checkpoint(source: str) -> str:
    """Zoo name, URL or path → local file path."""
    if os.path.isfile(source):
        return source
    raise FileNotFoundError(f'checkpoint {source!r} is not a local file (zoo names and URLs are not '
                            'supported by this build yet)')
