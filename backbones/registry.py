"""The package's only link to OpenMMLab: a child of mmengine's MODELS registry with scope `backbones`.

Configs of mmdet, mmseg and mmpose say `type='backbones.FocalNet'`; mmengine imports
`backbones.registry` for the `backbones.` scope by itself, so `custom_imports` is optional.
The class names would clash with mmseg's `PCPVT`/`SVT` and mmpose's `HRFormer` if registered in their
scopes; registering only here avoids that.
"""
from __future__ import annotations

from mmengine.model import BaseModule
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

from . import compat  # noqa: F401  (OpenMMLab workarounds; see compat.py)
from ._base import BACKBONE_CLASSES
from . import families  # noqa: F401  (imports every family, filling BACKBONE_CLASSES)

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='backbones', locations=['backbones.registry'])

for _name, _cls in sorted(BACKBONE_CLASSES.items()):
    MODELS.register_module(name=_name, module=_cls)


@MODELS.register_module()
def CutMixSegDataPreProcessor(cutmix: dict | None = None, **kwargs):  # noqa: N802 (a config type name)
    """mmseg's `SegDataPreProcessor` (same arguments) with `backbones.augment.SegCutMix(**cutmix)` applied
    to training batches; mmseg 1.2.2 calls `batch_augments` as given, so a config cannot build it there.
    Config switch: `data_preprocessor=dict(type='backbones.CutMixSegDataPreProcessor',
    cutmix=dict(alpha=1.0, prob=1.0))`."""
    from mmseg.models.data_preprocessor import SegDataPreProcessor
    from .augment import SegCutMix
    preprocessor = SegDataPreProcessor(**kwargs)
    if cutmix is not None:
        preprocessor.batch_augments = SegCutMix(**cutmix)
    return preprocessor


@MODELS.register_module()
class ContiguousMaps(BaseModule):
    """A neck that runs `neck` (any registered neck config, or none) and hands its maps on contiguous.

    The zoo backbones return channels-last maps (their fast layout); heads built on mmcv ops that accept
    only contiguous inputs (DEKR's `DeformConv2d`) get them through this wrapper, which `backbones swap`
    inserts for such heads. `(maps...) → (maps...)`, a copy only where a map is not contiguous."""

    def __init__(self, neck: dict | None = None, init_cfg: dict | None = None):
        super().__init__(init_cfg=init_cfg)
        self.neck = MMENGINE_MODELS.build(neck) if neck is not None else None

    def forward(self, inputs):
        outs = self.neck(inputs) if self.neck is not None else inputs
        if isinstance(outs, (list, tuple)):
            return type(outs)(o.contiguous() for o in outs)
        return outs.contiguous()


def register_all_modules(init_default_scope: bool = False) -> None:
    """For notebooks and `init_model` users: import everything; optionally make `backbones` the scope."""
    if init_default_scope:
        from mmengine.registry import DefaultScope
        DefaultScope.get_instance('backbones', scope_name='backbones')


# ---- Scala training (backbones.slimming) ------------------------------------------------------------
import functools  # noqa: E402
from typing import Iterable, Optional, Sequence  # noqa: E402

from mmengine.model import BaseModel  # noqa: E402
from mmengine.registry import LOOPS as MMENGINE_LOOPS  # noqa: E402

LOOPS = Registry('loop', parent=MMENGINE_LOOPS, scope='backbones', locations=['backbones.registry'])

_DISTILLED_HEADS = ('decode_head', 'bbox_head', 'head')     # segmentation, one-stage detection, pose
SCALA_TEACHERS = ('progressive', 'full')   # Scala's --transfer_type progressive / US (the full net teaches all)
SCALA_ROLES = ('full', 'upper', 'lower', 'smallest')     # the four passes of a Scala step, widest first
NORM_AFFINE = ('shared', 'per_width')      # neck / head BatchNorm weight and bias: one, or one per trained width


def _task_model(model):
    """The model a runner holds, without DDP wrappers and without the ScalaModel wrapper."""
    model = getattr(model, 'module', model)
    return getattr(model, 'model', model) if isinstance(model, ScalaModel) else model


@MODELS.register_module()
class ScalaModel(BaseModel):
    """Scala training of a det / seg / pose model whose backbone is slimmable. Config switch:
    on top of a task config, `model = dict(type='backbones.ScalaModel', task='RetinaNet', warmup_iters=...,
    backbone=dict(slimmable=dict()))` (the task's own model keys merge in and build `task`), or
    `model=dict(type='backbones.ScalaModel', model=<task model dict or module>)`. Checkpoint keys are the
    task model's under `model.`.

    Per iteration (after `warmup_iters` iterations at width 1 only): four forward/backward passes at the
    widths of `slimming.scala_widths` (1, one from the upper half of the grid, one from the lower half,
    the smallest), each with the task's own label losses plus (all but the first) the distillation of
    the next wider pass's head output (`teacher='progressive'`, Scala's default) or of the full width's
    (`teacher='full'`, Scala's `--transfer_type US`), detached (`slimming.distillation_loss`), then ONE
    optimizer step.
    Distilled: segmentation logits of `decode_head` (softmax KL), class logits of a one-stage
    detector's `bbox_head` (sigmoid or softmax KL: box regression targets are exact already), pose
    heatmaps of `head` (MSE: heatmaps are not distributions). Two-stage detectors are refused: their
    second stage sees other proposals at each width, so outputs do not correspond.
    Validation and test run at `val_width`; `backbones.ScalaValLoop` reports several widths. BatchNorms of the
    neck and heads keep running statistics per trained width, as the backbone's do (`slimming.track_norms`);
    `norm_affine='per_width'` gives them a weight and bias per trained width too (switchable BatchNorm of
    slimmable networks; 'shared', the default, keeps one).
    Before each validation and at the end of training (before the checkpoint is written), `tools/train.py`
    re-estimates the BatchNorm statistics of `calibrate_widths` (default: the ScalaValLoop's widths, else
    0.25 / 0.5 / 0.75 / 1) over `calibrate_batches` training batches with the current weights
    (`calibrate_scala_norms`; 0 turns it off): a width drawn in one step of five keeps a running average
    over weights that kept changing.

    `loss_weights` (e.g. dict(smallest=2.0)): a factor on the whole loss (label + distillation) of the passes
    of these roles ('full', 'upper', 'lower', 'smallest'; others 1), to move the compromise of the shared
    weights towards a width (the smallest shares its channels and the whole neck / head with width 1).

    `rank_ratios` (a backbone built with `lowrank=` as well, MCUFormer's rank search space): the passes
    below width 1 also draw one rank ratio per stage from these values (those up to the built ratio of the
    stage), so that the supernet's truncated low-rank layers (`set_width(..., ranks=...)`, the search's
    `--ranks`) are trained sub-networks too; None trains the built ranks only.
    """

    def __init__(self, model=None, warmup_iters: int = 0, distill: str = 'auto', distill_weight: float = 1.0,
                 teacher: str = 'progressive', val_width: float = 1.0, seed: int = 0, init_cfg=None,
                 task: str | None = None, rank_ratios: Optional[Sequence[float]] = None, calibrate_batches: int = 16,
                 calibrate_widths: Optional[Sequence[float]] = None, loss_weights: Optional[dict] = None,
                 norm_affine: str = 'shared', **task_cfg):
        import random
        from . import slimming
        if (model is None) == (task is None):
            raise ValueError('ScalaModel: give either model=<task model dict or module> or task=<task model '
                             'type> with its keys')
        if task is not None:
            model = dict(type=task, **task_cfg)
        elif task_cfg:
            raise ValueError(f'ScalaModel: unexpected arguments {sorted(task_cfg)} next to model=')
        task = MMENGINE_MODELS.build(model) if isinstance(model, dict) else model
        super().__init__(data_preprocessor=task.data_preprocessor, init_cfg=init_cfg)
        self.model = task
        backbone = task.backbone
        if not slimming.is_slimmable(backbone):
            raise ValueError('ScalaModel: model.backbone must be built with slimmable=dict(...)')
        slimming.set_width(backbone, val_width)
        if norm_affine not in NORM_AFFINE:
            raise ValueError(f'ScalaModel: norm_affine={norm_affine!r}; accepted: {NORM_AFFINE}')
        slimming.track_norms(backbone, [m for name, m in task.named_modules()     # neck / head BN: per width
                                        if name != 'backbone' and not name.startswith('backbone.')],
                             affine=norm_affine == 'per_width')
        self.head_name = next((n for n in _DISTILLED_HEADS if getattr(task, n, None) is not None), None)
        if self.head_name is None or hasattr(task, 'roi_head'):
            raise NotImplementedError(f'ScalaModel: distillation needs a decode_head (segmentation), a one-stage '
                                      f'bbox_head (detection) or a pose head; {type(task).__name__} has none')
        if distill == 'auto':
            head = getattr(task, self.head_name)
            distill = {'decode_head': 'softmax', 'head': 'mse'}.get(
                self.head_name, 'sigmoid' if getattr(head, 'use_sigmoid_cls', False) else 'softmax')
        if distill not in slimming.DISTILL_KINDS:
            raise ValueError(f"ScalaModel: distill={distill!r}; accepted: 'auto' or one of {slimming.DISTILL_KINDS}")
        if teacher not in SCALA_TEACHERS:
            raise ValueError(f'ScalaModel: teacher={teacher!r}; accepted: {SCALA_TEACHERS}')
        self.distill, self.distill_weight, self.warmup_iters = distill, float(distill_weight), int(warmup_iters)
        self.teacher = teacher
        self.val_width = val_width
        unknown = sorted(set(loss_weights or {}) - set(SCALA_ROLES))
        if unknown:
            raise ValueError(f'ScalaModel: loss_weights has unknown roles {unknown}; accepted: {SCALA_ROLES}')
        self.loss_weights = {role: float((loss_weights or {}).get(role, 1.0)) for role in SCALA_ROLES}
        if any(not w > 0 for w in self.loss_weights.values()):
            raise ValueError(f'ScalaModel: loss_weights must be > 0, got {loss_weights}')
        self.rank_choices = (None if rank_ratios is None else
                             slimming.rank_choices(backbone, rank_ratios, 'ScalaModel', 'rank_ratios'))
        if isinstance(calibrate_batches, bool) or not isinstance(calibrate_batches, int) or calibrate_batches < 0:
            raise ValueError(f'ScalaModel: calibrate_batches={calibrate_batches!r}; expected a count >= 0')
        self.calibrate_batches = calibrate_batches
        self.calibrate_widths = None if calibrate_widths is None else [float(w) for w in calibrate_widths]
        self._rng = random.Random(seed)
        self._iter = 0

    @property
    def backbone(self):
        """The task model's (slimmable) backbone."""
        return self.model.backbone

    def _loss_and_head_output(self, inputs, data_samples):
        """The task's loss dict and its distilled head's first output of this forward."""
        head = getattr(self.model, self.head_name)
        captured = []
        forward = head.forward

        def capture(*args, **kwargs):
            out = forward(*args, **kwargs)
            captured.append(out)
            return out

        head.forward = capture          # heads call self.forward(...) as well as self(...)
        try:
            losses = self.model.loss(inputs, data_samples)
        finally:
            del head.forward
        out = captured[0]
        if self.head_name == 'bbox_head':      # (class logits per level, box regressions per level, ...)
            out = out[0]
        elif isinstance(out, (tuple, list)) and self.head_name == 'head':
            out = out[0]
        return losses, out

    def train_step(self, data, optim_wrapper):
        from . import slimming
        with optim_wrapper.optim_context(self):
            data = self.data_preprocessor(data, True)
        backbone = self.model.backbone
        widths = [1.0] if self._iter < self.warmup_iters else slimming.scala_widths(backbone, self._rng)
        grid = slimming.trained_widths(backbone)
        log_vars, teacher = {}, None
        try:
            for width in widths:
                # logged by role (the drawn widths vary): full, upper / lower half of the grid, smallest
                role = ('full' if width == 1.0 else 'smallest' if width == grid[0]
                        else 'upper' if width >= (grid[0] + 1) / 2 else 'lower')
                ranks = None if width == 1.0 or self.rank_choices is None else \
                    [self._rng.choice(c) for c in self.rank_choices]
                slimming.set_width(backbone, width, ranks=ranks)
                with optim_wrapper.optim_context(self):
                    losses, out = self._loss_and_head_output(data['inputs'], data['data_samples'])
                    loss, parsed = self.parse_losses(losses)
                    if teacher is not None:
                        kd = self.distill_weight * slimming.distillation_loss(out, teacher, self.distill)
                        loss = loss + kd
                        log_vars[f'loss_kd_{role}'] = kd.detach()
                optim_wrapper.backward(self.loss_weights[role] * loss)
                if teacher is None or self.teacher == 'progressive':
                    teacher = slimming.detached(out)
                log_vars[f'loss_{role}'] = loss.detach()
                if width == 1.0:
                    log_vars.update({k: v for k, v in parsed.items() if k != 'loss'})
        finally:
            slimming.set_width(backbone, self.val_width)
        optim_wrapper.step()
        optim_wrapper.zero_grad()
        self._iter += 1
        log_vars['loss'] = sum(log_vars[f'loss_{r}'] for r in SCALA_ROLES
                               if f'loss_{r}' in log_vars)
        return log_vars

    def val_step(self, data):
        return self.model.val_step(data)

    def test_step(self, data):
        return self.model.test_step(data)

    def forward(self, inputs, data_samples=None, mode: str = 'tensor'):
        if mode == 'loss':     # MMDistributedDataParallel.train_step computes losses through forward
            raise NotImplementedError('ScalaModel trains in its own train_step (four widths, one step); '
                                      'distributed (DDP) training of it is not supported yet')
        return self.model(inputs, data_samples, mode)


SCALA_VAL_WIDTHS = (0.25, 0.5, 0.75, 1.0)     # ScalaValLoop's default widths, also calibrated by default


@LOOPS.register_module()
def ScalaValLoop(runner, dataloader, evaluator, widths=SCALA_VAL_WIDTHS, fp16: bool = False):  # noqa: N802
    """mmengine's ValLoop run once per width of `widths` (trained widths of the slimmable backbone);
    metrics are reported as `name@width` (width 1 also under the plain names, for `save_best`). Config:
    `val_cfg = dict(type='backbones.ScalaValLoop', widths=[0.25, 0.5, 0.75, 1.0])`. (A function: importing
    mmengine.runner needs OpenCV, which `import backbones` must not.)"""
    return _scala_val_loop_class()(runner, dataloader, evaluator, widths, fp16)


@functools.lru_cache(maxsize=None)
def _scala_val_loop_class() -> type:
    from mmengine.runner import ValLoop

    class _ScalaValLoop(ValLoop):
        def __init__(self, runner, dataloader, evaluator, widths, fp16):
            super().__init__(runner, dataloader, evaluator, fp16)
            self.widths = [float(w) for w in widths]

        def run(self) -> dict:
            from . import slimming
            self.runner.call_hook('before_val')
            self.runner.call_hook('before_val_epoch')
            self.runner.model.eval()
            backbone = _task_model(self.runner.model).backbone
            metrics: dict = {}
            for width in self.widths:
                with slimming.at_width(backbone, width):
                    for idx, data_batch in enumerate(self.dataloader):
                        self.run_iter(idx, data_batch)
                result = self.evaluator.evaluate(len(self.dataloader.dataset))
                metrics.update({f'{k}@{width:g}': v for k, v in result.items()})
                if width == 1.0:
                    metrics.update(result)
            self.runner.call_hook('after_val_epoch', metrics=metrics)
            self.runner.call_hook('after_val')
            return metrics

    return _ScalaValLoop


def calibrate_scala_norms(model, batches: Iterable, count: int, widths: Sequence[float]) -> int:
    """Re-estimate the running statistics of every BatchNorm of a ScalaModel's task model (backbone rows,
    neck and heads) at each of `widths`: statistics reset, then `count` batches of `batches` (training data)
    forwarded in training mode without gradients, cumulative averages (momentum None). Returns the number of
    BatchNorms calibrated (0: none, nothing run)."""
    import itertools

    import torch
    from torch import nn

    from . import slimming
    task = _task_model(model)
    norms = [m for m in task.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms or count <= 0:
        return 0
    wrapper = getattr(model, 'module', model)
    momenta = [m.momentum for m in norms]
    was_training = task.training
    data = list(itertools.islice(iter(batches), count))
    try:
        for m in norms:
            m.momentum = None
        task.train()
        with torch.no_grad():
            for width in widths:
                with slimming.at_width(task.backbone, width):
                    slimming.reset_norm_statistics(task.backbone, norms)
                    for batch in data:
                        batch = wrapper.data_preprocessor(batch, True)
                        task(batch['inputs'], batch['data_samples'], mode='tensor')
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        task.train(was_training)
    return len(norms)
