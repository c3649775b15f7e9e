"""The `backbones` command (also `python -m backbones`): the checkpoint zoo from a shell.

    backbones list [--family F] [--pattern P] [--sizes]
    backbones download NAME... | --family F     [--from-file FILE]
    backbones verify [NAME...]
    backbones where [NAME]
    backbones convert SRC --family F --out DIR [--name N] [--arch A] [--prefix P] [--trust]
    backbones publish SRC --out DIR [--name N]
    backbones swap CONFIG BACKBONE --out FILE [--checkpoint NAME] [--lr LR] [--weight-decay WD]
    backbones export-width CONFIG CHECKPOINT --width R --out DIR [--trust]
    backbones merge-adapters ARC_CONFIG ADAPTER_FILE --out FILE [--base PLAIN_CHECKPOINT] [--trust DIR]
    backbones memory VARIANT --size HxW [--batch N] [--lean] [--lowrank R] [--onnx] [--json F]
    backbones lowrank VARIANT... [--ratios R...] [--size HxW] [--checkpoint C]
    backbones fit VARIANT --budget 256MB --size 512x512 [--allow-resize] [--out DIR]
    backbones search CONFIG CHECKPOINT --budget latency=120ms|memory=256MB|params=10M|macs=2G --out DIR
                     [--population 50] [--generations 20] [--evolve-space [--rounds 2]] [--seed 0]
                     [--ranks 1.0 0.9 0.7 0.5]   (rank ratio per stage: lowrank= beside slimmable=)

`tools/download.py`, `tools/convert.py`, `tools/publish.py` and `tools/swap_backbone.py` are thin wrappers.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import urllib.request
from pathlib import Path
from typing import Optional, Sequence

import torch

CONVERTER_VERSION = 1
"""Bumped when a converter's output changes; written into converted files' meta."""


def _print(*args) -> None:
    print(*args, flush=True)


def _error(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def _human(size: Optional[int]) -> str:
    if size is None:
        return '-'
    for unit in ('B', 'KiB', 'MiB', 'GiB'):
        if size < 1024 or unit == 'GiB':
            return f'{size:.0f} {unit}' if unit == 'B' else f'{size:.1f} {unit}'
        size /= 1024
    return '-'


def _remote_size(url: str) -> Optional[int]:
    try:
        request = urllib.request.Request(url, method='HEAD', headers={'User-Agent': 'backbones-zoo'})
        with urllib.request.urlopen(request, timeout=10) as response:
            length = response.headers.get('Content-Length')
            return int(length) if length else None
    except Exception:  # noqa: BLE001 - a size is a nicety
        return None


# ---- list / download / verify / where ---------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    from . import hub, zoo
    names = zoo.list_checkpoints(args.pattern or '', args.family or '')
    for name in names:
        entry = zoo.get_checkpoint(name)
        metric = '; '.join(f'{m.metric} {m.value:g}' for m in entry.metrics[:2]) or '-'
        _print(f'{name}  [{entry.task}, {entry.dataset}, {entry.license}]  {metric}')
        for source, cached in [(s, None) for s in entry.sources if not s.direct] + hub.cached_status(entry):
            size = cached.stat().st_size if cached else (
                _remote_size(source.url) if args.sizes and source.direct and not hub.is_offline() else None)
            state = 'cached' if cached else ('manual' if not source.direct else 'not cached')
            _print(f'    {source.host:16s} {source.layout:8s} {_human(size):>10s}  {state:10s}  '
                   f'{source.hash_status}  {source.url}')
    _print(f'{len(names)} checkpoints; cache: {hub.cache_dir()}')
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from . import hub, zoo
    names = list(args.names)
    if args.family:
        names += [n for n in zoo.list_checkpoints(family=args.family) if zoo.get_checkpoint(n).direct_sources]
    if not names:
        _error('nothing to download: give NAMEs or --family')
        return 2
    if args.from_file:
        if len(names) != 1:
            _error('--from-file takes exactly one NAME')
            return 2
        fetched = hub.import_file(names[0], args.from_file)
        _print(f'{names[0]}: imported {args.from_file} → {fetched.path} ({fetched.verification})')
        return 0
    failed = 0
    for name in names:
        try:
            fetched = (hub.fetch_checkpoint(name) if name in zoo.all_checkpoints()
                       else hub.fetch_url(name) if name.startswith(('http://', 'https://'))
                       else hub.fetch_checkpoint(name))
        except (hub.DownloadError, KeyError) as err:
            failed += 1
            _error(f'{name}: FAILED\n{err}')
            continue
        _print(f'{name}: {fetched.path}  from {fetched.url}  ({fetched.verification}, sha256 {fetched.sha256})')
    return 1 if failed else 0


def cmd_verify(args: argparse.Namespace) -> int:
    from . import hub, zoo
    names = args.names or zoo.list_checkpoints()
    bad = checked = 0
    for name in names:
        for source, cached in hub.cached_status(zoo.get_checkpoint(name)):
            if cached is None:
                continue
            checked += 1
            try:
                sha, how = hub.verify_file(cached, source, record_name=hub.cache_path(source.url).name)
                _print(f'OK        {name}  {cached}  ({how})')
            except hub.HashMismatchError as err:
                bad += 1
                _print(f'MISMATCH  {name}  {err}')
    _print(f'{checked} cached files checked, {bad} bad')
    return 1 if bad else 0


def cmd_where(args: argparse.Namespace) -> int:
    from . import hub, zoo
    if not args.name:
        _print(hub.cache_dir())
        return 0
    entry = zoo.get_checkpoint(args.name)
    found = False
    for source, cached in hub.cached_status(entry):
        _print(f'{cached or hub.cache_path(source.url)}  {"cached" if cached else "(not cached)"}  {source.url}')
        found |= cached is not None
    return 0 if found else 1


# ---- convert / publish ------------------------------------------------------------------------------
def _write_hashed(payload: dict, out_dir: str, name: str) -> tuple[Path, str]:
    """Save `payload` as `{out_dir}/{name}-{sha256[:8]}.pth` (tensors and plain meta only); (path, sha256)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f'.{name}.tmp{os.getpid()}'
    torch.save(payload, tmp)
    sha = hashlib.sha256(tmp.read_bytes()).hexdigest()
    final = out / f'{name}-{sha[:8]}.pth'
    os.replace(tmp, final)
    torch.load(final, map_location='cpu', weights_only=True)  # proves it loads without unpickling code
    return final, sha


def _entry_snippet(name: str, backbone: str, path: Path, sha: str, layout: str = 'ours') -> str:
    return (f"Checkpoint(\n    name='{name}', backbone='{backbone}',\n"
            f"    sources=(Source('https://YOUR-HOST/{path.name}', 'github-release', '{layout}',\n"
            f"                    sha256='{sha}'),),\n"
            f"    task='...', dataset='...', license='...', paper='...', code='...'),")


def cmd_convert(args: argparse.Namespace) -> int:
    from .hub import resolve_checkpoint, sha256_of
    from .weights import convert_checkpoint, read_checkpoint
    from . import families  # noqa: F401  (registers the converters)
    path = resolve_checkpoint(args.src)
    state = convert_checkpoint(read_checkpoint(path, trust=args.trust), args.family, args.prefix)
    if args.arch:
        _check_loads(args.family, args.arch, state)
    name = args.name or Path(path).name.split('.')[0]
    meta = dict(family=args.family, arch=args.arch or '', source=args.src, source_sha256=sha256_of(path),
                converter_version=CONVERTER_VERSION, backbones_version=_version())
    final, sha = _write_hashed({'state_dict': state, 'meta': meta}, args.out, name)
    _print(f'wrote {final} ({len(state)} tensors, sha256 {sha})')
    _print('table entry to add to backbones/zoo.py:')
    _print(_entry_snippet(name, args.backbone or f'{args.family}-{args.arch or "ARCH"}', final, sha))
    return 0


def _check_loads(family: str, arch: str, state: dict) -> None:
    from ._factory import _zoo
    from .weights import load_pretrained
    table = _zoo()
    matches = [(c, a) for c, a in table.values() if c.FAMILY == family and a == arch]
    if not matches:
        raise SystemExit(f'no {family} variant named {arch!r}')
    cls, arch = matches[0]
    report = load_pretrained(cls(arch=arch), {'state_dict': state})
    _print(f'checked: {report}')


def _version() -> str:
    from . import __version__
    return __version__


def cmd_publish(args: argparse.Namespace) -> int:
    from .weights import read_checkpoint, strip_training_state
    _print(f'reading {args.src} with full unpickling: only do this with your own training output')
    obj = read_checkpoint(args.src, trust=True)
    stripped = strip_training_state(obj)
    name = args.name or Path(args.src).name.split('.')[0]
    stripped['meta'].update(published_from=Path(args.src).name, backbones_version=_version())
    final, sha = _write_hashed(stripped, args.out, name)
    dropped = sorted(set(obj) - {'state_dict', 'meta'}) if isinstance(obj, dict) else []
    _print(f'wrote {final} ({len(stripped["state_dict"])} tensors, sha256 {sha}); dropped: {dropped}')
    _print(_entry_snippet(name, args.backbone or 'BACKBONE', final, sha))
    return 0


def cmd_swap(args: argparse.Namespace) -> int:
    from .swap import plan_swap, write_config
    plan = plan_swap(args.config, args.backbone, checkpoint=args.checkpoint, lr=args.lr,
                     weight_decay=args.weight_decay)
    out = write_config(plan, args.out)
    _print(f'wrote {out}: {args.backbone} out_indices={list(plan.out_indices)}, strides {plan.new_strides} '
           f'(stock {plan.stock_strides})')
    for note in plan.notes:
        _print(f'note: {note}')
    return 0


def cmd_export_width(args: argparse.Namespace) -> int:
    """A trained slimmable model (config + checkpoint) + a width → a standalone narrow config + checkpoint."""
    from .weights import read_checkpoint
    obj = read_checkpoint(args.checkpoint, trust=args.trust)
    state = obj.get('state_dict', obj) if isinstance(obj, dict) else obj
    export_files(args.config, state, args.width, None, args.out, f'{Path(args.config).stem}_width-{args.width:g}',
                 Path(args.checkpoint).name)
    return 0


def export_files(config: str, state: dict, width, depths, out: str, stem: str, source: str,
                 size: Optional[tuple[int, int]] = None, ranks: Optional[list] = None) -> tuple[Path, Path]:
    """`slimming.export_model` of a config's model and its state dict, written as OUT/STEM.py and a hashed
    checkpoint beside it (the config loads it); with `size` (H, W) its val / test pipelines resize images to
    it; `ranks`: the rank ratio per stage of a backbone with low-rank layers (None: the built ones).
    Returns (config path, checkpoint path)."""
    from mmengine.config import Config
    from .slimming import export_model
    cfg = Config.fromfile(config)
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    model_cfg, narrow_state, narrow = export_model(cfg.model.to_dict(), state, width, depths, ranks)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = dict(exported_from=source, width=width, depths=list(depths) if depths else None,
                input_size=list(size) if size else None, backbones_version=_version())
    if getattr(narrow, 'lowrank_cfg', None):
        meta['ranks'] = list(narrow.lowrank_cfg['ratio'])
    final, sha = _write_hashed({'state_dict': narrow_state, 'meta': meta}, str(out_dir), stem)
    cfg.model = model_cfg
    cfg.load_from = str(Path(final).resolve())
    for loop in ('val_cfg', 'test_cfg'):          # a Scala training's per-width loop → the plain one
        if str(cfg.get(loop, {}).get('type', '')).endswith('ScalaValLoop'):
            cfg[loop] = dict(type='ValLoop' if loop == 'val_cfg' else 'TestLoop')
    if size is not None:
        from .search import with_test_size
        for loader in ('val_dataloader', 'test_dataloader'):
            if cfg.get(loader):
                cfg[loader].dataset.pipeline = with_test_size(cfg[loader].dataset.pipeline, size)
    config_path = out_dir / f'{stem}.py'
    cfg.dump(str(config_path))
    params = sum(p.numel() for p in narrow.parameters())
    shown = f'{width:g}' if isinstance(width, (int, float)) else str(width)
    _print(f'wrote {config_path} and {final} (backbone {params / 1e6:.2f} M parameters at width {shown}'
           + (f', depths {list(depths)}' if depths else '') + (f', ranks {meta["ranks"]}' if 'ranks' in meta else '')
           + f', output channels {narrow.out_channels})')
    return config_path, Path(final)


def cmd_configs(args: argparse.Namespace) -> int:
    from .resources import data_root, list_configs
    root = data_root() / 'configs'
    for name in list_configs(args.pattern or ''):
        _print(str(root / name) if args.paths else name)
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    from .resources import model_card
    path = model_card(args.family)
    _print(str(path) if args.path else path.read_text())
    return 0


def run_passthrough(command: str, argv: list[str]) -> int:
    """`demo-data`, `train`, `test`: their own parsers (the tools' ones) read the rest of the line."""
    if command == 'demo-data':
        from .demo_data import main as entry
    else:
        from .runner import test_main, train_main
        entry = train_main if command == 'train' else test_main
    entry(argv)
    return 0


def cmd_merge_adapters(args: argparse.Namespace) -> int:
    from .runner import merge_adapter_file
    checkpoint = merge_adapter_file(args.config, args.adapter, args.out, base=args.base, trusted=args.trust)
    _print(f'merged {args.adapter} into its base: {len(checkpoint["state_dict"])} tensors → {args.out}')
    return 0


PASSTHROUGH = {
    'demo-data': 'write the demo dataset (--out data/demo; = tools/make_demo_data.py)',
    'train': 'train a config (= tools/train.py; shipped config names work too)',
    'test': 'evaluate a checkpoint (= tools/test.py)',
}


# ---- parser -----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='backbones', description='FocalNet / Twins / HRFormer / S3 checkpoint zoo')
    parser.add_argument('-v', '--verbose', action='store_true')
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('list', help='list the zoo: checkpoints, sources, hash status, cache state')
    p.add_argument('--family')
    p.add_argument('--pattern')
    p.add_argument('--sizes', action='store_true', help='ask the hosts for file sizes (network)')
    p.set_defaults(func=cmd_list)
    p = sub.add_parser('download', help='download checkpoints by name (or URL), or a whole family')
    p.add_argument('names', nargs='*')
    p.add_argument('--family')
    p.add_argument('--from-file', help='put a hand-downloaded file (Drive/OneDrive) into the cache')
    p.set_defaults(func=cmd_download)
    p = sub.add_parser('verify', help='re-check the hashes of cached files')
    p.add_argument('names', nargs='*')
    p.set_defaults(func=cmd_verify)
    p = sub.add_parser('where', help='print the cache directory, or where a checkpoint is cached')
    p.add_argument('name', nargs='?')
    p.set_defaults(func=cmd_where)
    p = sub.add_parser('convert', help='convert any supported layout to ours: {name}-{sha256[:8]}.pth')
    p.add_argument('src', help='path, URL or zoo name')
    p.add_argument('--family', required=True, choices=('focalnet', 'twins', 'hrformer', 's3'))
    p.add_argument('--out', required=True)
    p.add_argument('--name')
    p.add_argument('--arch', help='variant to check the converted weights against (loads strictly)')
    p.add_argument('--backbone', help='backbone zoo name for the printed table entry')
    p.add_argument('--prefix', help="select and strip a key prefix, e.g. 'backbone.'")
    p.add_argument('--trust', action='store_true', help='allow full unpickling (your own files only)')
    p.set_defaults(func=cmd_convert)
    p = sub.add_parser('publish', help='strip optimizer/runner state from your own mmengine checkpoint')
    p.add_argument('src')
    p.add_argument('--out', required=True)
    p.add_argument('--name')
    p.add_argument('--backbone')
    p.set_defaults(func=cmd_publish)
    p = sub.add_parser('swap', help='swap a zoo backbone into any mmdet/mmseg/mmpose config')
    p.add_argument('config', help="a config path or e.g. 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'")
    p.add_argument('backbone', help="zoo backbone name, e.g. 'focalnet-tiny-srf'")
    p.add_argument('--out', required=True)
    p.add_argument('--checkpoint', help='zoo checkpoint name (default: the backbone\'s default)')
    p.add_argument('--lr', type=float, help='AdamW learning rate (default: the family recipe for the task)')
    p.add_argument('--weight-decay', type=float, help='AdamW weight decay (default: the family recipe)')
    p.set_defaults(func=cmd_swap)
    p = sub.add_parser('export-width', help='a trained slimmable model + a width → standalone narrow '
                                            'config and checkpoint')
    p.add_argument('config', help='the training config (backbone with slimmable=dict(...))')
    p.add_argument('checkpoint', help='its trained checkpoint')
    p.add_argument('--width', type=float, required=True, help='a trained width, e.g. 0.5')
    p.add_argument('--out', required=True, help='directory for the config and checkpoint')
    p.add_argument('--trust', action='store_true', help='allow full unpickling (your own runner checkpoints)')
    p.set_defaults(func=cmd_export_width)
    p = sub.add_parser('configs', help='list the configs shipped with the package (det, seg, pose, demo)')
    p.add_argument('pattern', nargs='?', help='substring filter, e.g. focalnet or demo')
    p.add_argument('--paths', action='store_true', help='print absolute paths')
    p.set_defaults(func=cmd_configs)
    p = sub.add_parser('card', help='print a family\'s model card (or its path)')
    p.add_argument('family', choices=('focalnet', 'twins', 'hrformer', 's3'))
    p.add_argument('--path', action='store_true')
    p.set_defaults(func=cmd_card)
    p = sub.add_parser('merge-adapters', help='fold an ARC adapter file into its base: one plain checkpoint')
    p.add_argument('config', help='the ARC config the adapter file was trained with')
    p.add_argument('adapter', help='adapter file (adapters_final.pth of the training run)')
    p.add_argument('--out', required=True, help='merged checkpoint; loads into the plain parent config')
    p.add_argument('--base', help="the plain checkpoint the ARC run started from (its load_from), if any")
    p.add_argument('--trust', nargs='*', default=[], metavar='FOLDER',
                   help='folders whose full (non tensor-only) checkpoints may be unpickled')
    p.set_defaults(func=cmd_merge_adapters)
    from . import memory
    p = sub.add_parser('memory', help='memory model: live activations per block, predicted and measured peak')
    memory.add_arguments(p)
    p.set_defaults(func=memory.cmd_memory)
    from . import lowrank
    p = sub.add_parser('lowrank', help='low-rank layers: output error, parameters, memory against the rank ratio')
    lowrank.add_arguments(p)
    p.set_defaults(func=lowrank.cmd_table)
    p = sub.add_parser('fit', help='choose rank ratios (and input size) meeting a peak-memory budget')
    lowrank.add_fit_arguments(p)
    p.set_defaults(func=lowrank.cmd_fit)
    from . import search
    p = sub.add_parser('search', help='evolutionary search of a slimmable supernet for the best sub-network '
                                      'within a latency / memory / params / MACs budget')
    search.add_arguments(p)
    p.set_defaults(func=search.cmd_search)
    for command, text in PASSTHROUGH.items():   # listed for --help; main() dispatches them
        sub.add_parser(command, add_help=False, help=text)
    return parser


def _run(argv: list[str]) -> int:
    if argv and argv[0] in PASSTHROUGH:
        return run_passthrough(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format='%(message)s')
    return int(args.func(args) or 0)


_OPENMMLAB_HINT = ("the OpenMMLab stack (mmengine, mmcv, mmdet, mmseg, mmpose): run `bash tools/setup_env.sh` "
                   "in a source checkout (it builds mmcv 2.1.0 against your torch; README, Install)")
OPTIONAL_DEPENDENCIES = {
    'cv2': 'OpenCV: pip install opencv-python-headless (bash tools/setup_env.sh installs it too)',
    'safetensors': 'safetensors: pip install safetensors',
    **{name: _OPENMMLAB_HINT for name in ('mmengine', 'mmcv', 'mmdet', 'mmseg', 'mmpose')},
}
"""Top-level module → what to install, for the verbs that need more than torch."""


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the user's input, not a bug: reported as one line on stderr, no traceback."""
    from ._base import InvalidArgumentError
    from .hub import DownloadError
    from .weights import CheckpointError
    return InvalidArgumentError, CheckpointError, DownloadError, FileNotFoundError, KeyError


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run a verb like a Unix tool: a closed pipe (`backbones list | head -1`) ends quietly with status 0;
    user errors and missing optional dependencies print one line on stderr and exit 1 (`-v` shows the
    traceback); anything else is a bug and keeps its traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith('-')), '')
    try:
        return _run(argv)
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as err:
        need = OPTIONAL_DEPENDENCIES.get((err.name or '').split('.')[0])
        if need is None or '-v' in argv or '--verbose' in argv:
            raise
        return _fail(command, f'needs {need} (No module named {err.name!r})')
    except _user_errors() as err:
        if '-v' in argv or '--verbose' in argv:
            raise
        return _fail(command, err.args[0] if isinstance(err, KeyError) and err.args else err)


def _fail(command: str, message: object) -> int:
    text = '; '.join(line.strip() for line in str(message).splitlines() if line.strip())
    print(f'{"backbones " + command if command else "backbones"}: error: {text}', file=sys.stderr, flush=True)
    return 1


def _silence_stdout() -> None:
    """After EPIPE: point stdout at /dev/null so that the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):   # no real file descriptor (in-process callers)
        pass


if __name__ == '__main__':
    sys.exit(main())
