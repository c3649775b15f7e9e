"""Train / test any mmdet, mmseg or mmpose config with mmengine's Runner, on CPU or GPU.

`tools/train.py`, `tools/test.py` and `python -m backbones train|test` are thin wrappers over
`train()` and `test()`. Handled here (docs/stack.md):
- checkpoints under torch's `weights_only` default: every local checkpoint is first read with
  `weights_only=True`; a Runner checkpoint (which pickles optimizer/message-hub objects) is read in
  full only when it lies inside this run's work_dir or a folder the user trusted (`--trust`);
- CPU distributed training (torchrun, slurm): gloo, DDP without device_ids, SyncBN → BN;
- `--amp`: bf16 autocast on CPU, fp16 with loss scaling on GPU.
"""
from __future__ import annotations

import json
import logging
import os
import os.path as osp
import pickle
from pathlib import Path
from typing import Optional, Sequence

import torch

_TRUSTED_ROOTS: list[Path] = []


def trust_checkpoints_under(*folders: str | os.PathLike) -> None:
    """Allow full unpickling for checkpoints inside these folders (the user's own runs)."""
    for folder in folders:
        _TRUSTED_ROOTS.append(Path(folder).resolve())


def _is_trusted(path: str) -> bool:
    resolved = Path(path).resolve()
    return any(root == resolved or root in resolved.parents for root in _TRUSTED_ROOTS)


def _load_local_checkpoint(filename: str, map_location=None, logger=None):
    """mmengine loader for plain paths: weights-only first, full unpickling only for trusted files."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        if not _is_trusted(filename):
            raise pickle.UnpicklingError(
                f'{filename} is not a tensor-only checkpoint and does not lie in a trusted folder; refused '
                'because unpickling can run arbitrary code. Resume from your own work_dir, pass --trust '
                'FOLDER, or strip it with `backbones publish`.') from None
        logging.getLogger('backbones').info('reading trusted Runner checkpoint %s in full', filename)
        return torch.load(filename, map_location=map_location, weights_only=False)


def _install_checkpoint_loader() -> None:
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', force=True)(_load_local_checkpoint)


def _replace_syncbn(node):
    """Config tree: every norm_cfg of type SyncBN becomes BN (SyncBN cannot run without CUDA)."""
    if isinstance(node, dict):
        if node.get('type') in ('SyncBN', 'MMSyncBN'):
            node['type'] = 'BN'
        for value in node.values():
            _replace_syncbn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _replace_syncbn(value)


def prepare_config(config: str, work_dir: Optional[str] = None, cfg_options: Optional[dict] = None,
                   launcher: str = 'none', amp: bool = False):
    """Read a config and apply the command-line choices and the CPU adaptations."""
    from mmengine.config import Config
    import backbones.registry  # noqa: F401  (registration + compat shims before any build)

    from .resources import find_config
    cfg = Config.fromfile(str(find_config(config)))  # a path, or a shipped config's name
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.launcher = launcher
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs', osp.basename(config).removesuffix('.py'))
    cuda = torch.cuda.is_available()
    if not cuda:
        _replace_syncbn(cfg._cfg_dict)
        if launcher != 'none':
            cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
            cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None,
                                         broadcast_buffers=False, find_unused_parameters=False)
    if amp:
        wrapper = cfg.optim_wrapper
        if wrapper.get('type', 'OptimWrapper') == 'OptimWrapper':
            wrapper.type = 'AmpOptimWrapper'
            wrapper.loss_scale = 'dynamic' if cuda else None
            if not cuda:
                wrapper.dtype = 'bfloat16'
                wrapper.pop('loss_scale')
    return cfg


def _init_cpu_distributed(launcher: str) -> None:
    """mmengine's pytorch launcher assumes CUDA; on CPU the process group is created here (gloo)."""
    if launcher == 'none' or torch.cuda.is_available():
        return
    import torch.distributed as dist
    if dist.is_initialized():
        return
    if launcher == 'slurm' and 'RANK' not in os.environ:
        os.environ.setdefault('RANK', os.environ['SLURM_PROCID'])
        os.environ.setdefault('WORLD_SIZE', os.environ['SLURM_NTASKS'])
        os.environ.setdefault('LOCAL_RANK', os.environ.get('SLURM_LOCALID', '0'))
    dist.init_process_group('gloo')


def train(config: str, work_dir: Optional[str] = None, resume: Optional[str | bool] = None,
          amp: bool = False, cfg_options: Optional[dict] = None, launcher: str = 'none',
          trusted: Sequence[str] = ()):
    """Train; `resume=True` continues from the work_dir's last checkpoint, a path from that file."""
    from mmengine.runner import Runner

    cfg = prepare_config(config, work_dir, cfg_options, launcher, amp)
    if resume:
        cfg.resume = True
        cfg.load_from = None if resume is True else resume
    _install_checkpoint_loader()
    trust_checkpoints_under(cfg.work_dir, *trusted)
    _init_cpu_distributed(launcher)
    runner = Runner.from_cfg(cfg)
    _register_adapter_hook(runner)
    _register_scala_calibration_hook(runner)
    runner.train()
    return runner


def _unwrap(model):
    return getattr(model, 'module', model)


def _register_adapter_hook(runner) -> None:
    """ARC (`adapter=`) runs also write adapter files (adapters + neck + head, base recorded; see
    `backbones.save_adapters`): `adapters_iter_N.pth` / `adapters_epoch_N.pth` beside each checkpoint and
    `adapters_final.pth` at the end, in the work_dir."""
    from mmengine.dist import is_main_process
    from mmengine.hooks import Hook
    from mmengine.runner import EpochBasedTrainLoop

    from .adapters import has_adapters, save_adapters
    if not has_adapters(_unwrap(runner.model)):
        return

    class AdapterFileHook(Hook):
        priority = 'LOW'

        def _save(self, runner, name: str) -> None:
            if is_main_process():
                path = osp.join(runner.work_dir, name)
                save_adapters(_unwrap(runner.model), path, base=getattr(runner, '_load_from', None))
                runner.logger.info(f'adapter file written: {path}')

        def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
            by_epoch = isinstance(runner.train_loop, EpochBasedTrainLoop)
            self._save(runner, f'adapters_epoch_{runner.epoch + 1}.pth' if by_epoch
                       else f'adapters_iter_{runner.iter + 1}.pth')

        def after_train(self, runner) -> None:
            self._save(runner, 'adapters_final.pth')

    runner.register_hook(AdapterFileHook())


def _register_scala_calibration_hook(runner) -> None:
    """Scala runs (`backbones.ScalaModel`, calibrate_batches > 0) re-estimate their BatchNorm statistics per
    width (`registry.calibrate_scala_norms`) after the training iteration / epoch that precedes a validation
    and after the last one, before that iteration's checkpoint is written."""
    from mmengine.hooks import Hook
    from mmengine.runner import EpochBasedTrainLoop

    from .registry import SCALA_VAL_WIDTHS, ScalaModel, calibrate_scala_norms
    model = _unwrap(runner.model)
    if not isinstance(model, ScalaModel) or not model.calibrate_batches:
        return
    widths = model.calibrate_widths or getattr(runner.val_loop, 'widths', None) or list(SCALA_VAL_WIDTHS)

    class ScalaCalibrationHook(Hook):
        priority = 'NORMAL'            # before CheckpointHook (VERY_LOW) in the same after_train_* call

        def _due(self, runner, done: int, total: int) -> bool:
            loop = runner.train_loop
            interval, begin = getattr(loop, 'val_interval', 0), getattr(loop, 'val_begin', 1)
            return done == total or bool(interval and done >= begin and done % interval == 0)

        def _calibrate(self, runner) -> None:
            count = calibrate_scala_norms(runner.model, runner.train_dataloader, model.calibrate_batches, widths)
            if count:
                runner.logger.info(f'Scala: BatchNorm statistics of {count} layers re-estimated at widths '
                                   f'{", ".join(f"{w:g}" for w in widths)} over {model.calibrate_batches} batches')

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            if not isinstance(runner.train_loop, EpochBasedTrainLoop) and \
                    self._due(runner, runner.iter + 1, runner.max_iters):
                self._calibrate(runner)

        def after_train_epoch(self, runner) -> None:
            if isinstance(runner.train_loop, EpochBasedTrainLoop) and \
                    self._due(runner, runner.epoch + 1, runner.max_epochs):
                self._calibrate(runner)

    runner.register_hook(ScalaCalibrationHook())


def test(config: str, checkpoint: Optional[str], work_dir: Optional[str] = None,
         cfg_options: Optional[dict] = None, launcher: str = 'none', trusted: Sequence[str] = (),
         adapter: Optional[str] = None) -> dict:
    """Evaluate `checkpoint` on the config's test set; returns the metrics dict.

    With `adapter` (an adapter file written by a run of an ARC config): the base comes from `checkpoint`
    (a checkpoint of the plain model, as given to that run's `load_from`) or, without one, from the
    config's `init_cfg`; the adapter file (adapters + neck + head) goes on top, refused if its base differs.
    """
    from mmengine.runner import Runner

    cfg = prepare_config(config, work_dir, cfg_options, launcher)
    cfg.load_from = checkpoint
    _install_checkpoint_loader()
    trust_checkpoints_under(cfg.work_dir, *trusted)
    _init_cpu_distributed(launcher)
    runner = Runner.from_cfg(cfg)
    if adapter:
        from .adapters import load_adapters
        _unwrap(runner.model).init_weights()      # base from init_cfg (random without one) ...
        runner.load_or_resume()                   # ... or from `checkpoint`; runner.test() will not reload
        load_adapters(_unwrap(runner.model), adapter)
    return runner.test()


def build_model(config: str, cfg_options: Optional[dict] = None):
    """The config's model (detector / segmentor / pose estimator), built in its default scope."""
    from mmengine.registry import MODELS, init_default_scope
    cfg = prepare_config(config, cfg_options=cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    return MODELS.build(cfg.model)


def merge_adapter_file(config: str, adapter: str, out: str, base: Optional[str] = None,
                       trusted: Sequence[str] = ()) -> dict:
    """ARC config + adapter file (+ `base`, the plain checkpoint the run started from, if it did) → one
    plain checkpoint `{'state_dict', 'meta'}` with the adapters folded into the backbone: it loads
    (`load_from`, tools/test.py) into the plain config the ARC config derives from."""
    from mmengine.runner import load_checkpoint

    from .adapters import load_adapters, merge_adapters
    model = build_model(config)
    model.init_weights()
    if base:
        _install_checkpoint_loader()
        trust_checkpoints_under(*trusted)
        load_checkpoint(model, base, map_location='cpu', strict=False)
    payload = load_adapters(model, adapter)
    merged = merge_adapters(model, inplace=True)
    meta = dict(merged_from=osp.basename(adapter), config=osp.basename(config),
                bases=json.dumps({k: v['base'] for k, v in payload['backbones'].items()}))
    checkpoint = {'state_dict': {k: v.detach().cpu() for k, v in merged.state_dict().items()}, 'meta': meta}
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    torch.save(checkpoint, out)
    return checkpoint


def _add_common_arguments(parser) -> None:
    from mmengine.config import DictAction
    parser.add_argument('config', help='config file (ours in configs/, or any mmdet/mmseg/mmpose one)')
    parser.add_argument('--work-dir', help='where logs and checkpoints go (default work_dirs/<config>)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config keys, e.g. train_cfg.max_iters=100')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    parser.add_argument('--trust', nargs='*', default=[], metavar='FOLDER',
                        help='folders whose full (non tensor-only) checkpoints may be unpickled')


def train_main(argv: Optional[Sequence[str]] = None) -> None:
    import argparse
    parser = argparse.ArgumentParser(description='Train a detector, segmentor or pose model')
    _add_common_arguments(parser)
    parser.add_argument('--resume', nargs='?', const=True, default=None,
                        help='resume from the work_dir\'s latest checkpoint, or from the given one')
    parser.add_argument('--amp', action='store_true', help='mixed precision (bf16 on CPU, fp16 on GPU)')
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    train(args.config, args.work_dir, args.resume, args.amp, args.cfg_options, args.launcher, args.trust)


def test_main(argv: Optional[Sequence[str]] = None) -> None:
    import argparse
    parser = argparse.ArgumentParser(description='Evaluate a trained checkpoint')
    _add_common_arguments(parser)
    parser.add_argument('checkpoint', nargs='?',
                        help='checkpoint file; with --adapter the plain base checkpoint (default: init_cfg)')
    parser.add_argument('--adapter', metavar='FILE',
                        help='ARC configs: evaluate the base + this adapter file (written by the ARC run)')
    args = parser.parse_args(argv)
    if not args.checkpoint and not args.adapter:
        parser.error('give a CHECKPOINT, or --adapter FILE with an ARC config')
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    metrics = test(args.config, args.checkpoint, args.work_dir, args.cfg_options, args.launcher, args.trust,
                   adapter=args.adapter)
    # last line: the metrics as JSON (for scripts); floats, whatever numeric type the evaluator returned
    print(json.dumps({key: float(value) if isinstance(value, (int, float)) or hasattr(value, 'item') else value
                      for key, value in metrics.items()}))
