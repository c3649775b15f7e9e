"""The configs and model cards that ship with the package.

A wheel carries them in `backbones/_data/{configs,model_cards}` (copied there by setup.py's build step);
a git checkout or an editable install reads the repository's `configs/` and `model_cards/`.
"""
from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_root() -> Path:
    """Folder holding `configs/` and `model_cards/` (installed package data, else the checkout)."""
    for root in (_PACKAGE / '_data', _PACKAGE.parent):
        if (root / 'configs').is_dir():
            return root
    raise FileNotFoundError(f'no configs/ next to {_PACKAGE}: reinstall the package (pip install backbones) '
                            'or run from a git checkout')


def list_configs(pattern: str = '') -> list[str]:
    """Shipped configs as 'family/file.py' names, sorted; `pattern` filters by substring."""
    root = data_root() / 'configs'
    names = (str(p.relative_to(root)) for p in root.rglob('*.py') if not p.name.startswith('_'))
    return sorted(n for n in names if pattern in n)


def find_config(name: str) -> Path:
    """A config by path, by 'family/file.py', by file name or by stem ('retinanet_focalnet-demo_demo-shapes').

    An existing path wins; otherwise the shipped configs are searched. Raises with close matches.
    """
    if Path(name).is_file():
        return Path(name)
    root = data_root() / 'configs'
    if (root / name).is_file():
        return root / name
    stem = Path(name).name.removesuffix('.py')
    shipped = list_configs()
    matches = [root / n for n in shipped if Path(n).stem == stem]
    if len(matches) == 1:
        return matches[0]
    close = [n for n in shipped if stem.split('_')[0] in n][:10]
    raise FileNotFoundError(f'config {name!r} is neither a file nor a shipped config'
                            + (f'; ambiguous: {[str(m) for m in matches]}' if matches else '')
                            + (f'; similar: {close}' if close and not matches else '')
                            + ' (`backbones configs` lists them)')


def model_card(family: str) -> Path:
    """Path of a family's model card ('focalnet', 'twins', 'hrformer')."""
    path = data_root() / 'model_cards' / f'{family}.md'
    if not path.is_file():
        raise FileNotFoundError(f'no model card for {family!r}; available: '
                                f'{sorted(p.stem for p in path.parent.glob("*.md"))}')
    return path
