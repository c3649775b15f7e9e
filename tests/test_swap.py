"""`backbones swap` into stock mmdet / mmseg / mmpose configs: the sweep of one config per model family.

For each stock config in `SWEEP` the swap is planned for every backbone family (cheap: which levels, which
strides, every parameter used), and one family per config (in turn) is trained for one step at micro width
on a tiny synthetic batch: build, loss, backward, optimizer step through the swapped `optim_wrapper`, with
the checks: the strides the heads' prior generators / RoI extractors expect equal the strides of the maps
they get; the backbone outputs the strides written in `SWEEP` (from the stock recipe); every backbone
parameter has a gradient and moved; the preprocessor feeds RGB with the checkpoint's mean/std. `REFUSED`
lists configs the swap must refuse, with the reason it must give. The Runner test at the end trains one
iteration through the real data pipeline on the demo data. Needs mmdet, mmseg and mmpose: without them
these tests FAIL (they are never skipped).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from backbones._base import BACKBONE_CLASSES

REPO = Path(__file__).resolve().parents[1]
SIZE = 128   # input side of the synthetic det/seg batches

# (framework::config, family, the strides the swapped backbone must output: the stock recipe's levels,
#  nominal strides for dilated recipes)
SWEEP = [
    ('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', 'RetinaNet', (8, 16, 32)),
    ('mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', 'Faster R-CNN', (4, 8, 16, 32)),
    ('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', 'Mask R-CNN', (4, 8, 16, 32)),
    ('mmdet::cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py', 'Cascade Mask R-CNN', (4, 8, 16, 32)),
    ('mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py', 'FCOS', (8, 16, 32)),
    ('mmdet::atss/atss_r50_fpn_1x_coco.py', 'ATSS', (8, 16, 32)),
    ('mmdet::gfl/gfl_r50_fpn_1x_coco.py', 'GFL', (8, 16, 32)),
    ('mmdet::tood/tood_r50_fpn_1x_coco.py', 'TOOD', (8, 16, 32)),
    ('mmdet::centernet/centernet-update_r50-caffe_fpn_ms-1x_coco.py', 'CenterNet', (8, 16, 32)),
    ('mmdet::yolof/yolof_r50-c5_8xb8-1x_coco.py', 'YOLOF', (32,)),
    ('mmdet::yolox/yolox_s_8xb8-300e_coco.py', 'YOLOX', (8, 16, 32)),
    ('mmdet::yolo/yolov3_d53_8xb8-320-273e_coco.py', 'YOLOv3', (8, 16, 32)),
    ('mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py', 'RTMDet', (8, 16, 32)),
    ('mmdet::rtmdet/rtmdet-ins_tiny_8xb32-300e_coco.py', 'RTMDet-Ins', (8, 16, 32)),
    ('mmdet::detr/detr_r50_8xb2-150e_coco.py', 'DETR', (32,)),
    ('mmdet::conditional_detr/conditional-detr_r50_8xb2-50e_coco.py', 'Conditional DETR', (32,)),
    ('mmdet::deformable_detr/deformable-detr_r50_16xb2-50e_coco.py', 'Deformable DETR', (8, 16, 32)),
    ('mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py', 'DINO', (8, 16, 32)),
    ('mmdet::sparse_rcnn/sparse-rcnn_r50_fpn_1x_coco.py', 'Sparse R-CNN', (4, 8, 16, 32)),
    ('mmdet::solov2/solov2_r50_fpn_1x_coco.py', 'SOLOv2', (4, 8, 16, 32)),
    ('mmdet::condinst/condinst_r50_fpn_ms-poly-90k_coco_instance.py', 'CondInst', (8, 16, 32)),
    ('mmdet::yolact/yolact_r50_1xb8-55e_coco.py', 'YOLACT', (8, 16, 32)),
    ('mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py', 'Panoptic FPN', (4, 8, 16, 32)),
    ('mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco-panoptic.py', 'Mask2Former', (4, 8, 16, 32)),
    ('mmseg::upernet/upernet_r50_4xb4-80k_ade20k-512x512.py', 'UperNet', (4, 8, 16, 32)),
    ('mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py', 'Semantic FPN', (4, 8, 16, 32)),
    ('mmseg::pspnet/pspnet_r50-d8_4xb4-80k_ade20k-512x512.py', 'PSPNet', (16, 32)),
    ('mmseg::deeplabv3/deeplabv3_r50-d8_4xb4-80k_ade20k-512x512.py', 'DeepLabV3', (16, 32)),
    ('mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb4-80k_ade20k-512x512.py', 'DeepLabV3+', (4, 16, 32)),
    ('mmseg::fcn/fcn_r50-d8_4xb4-80k_ade20k-512x512.py', 'FCN', (16, 32)),
    ('mmseg::ocrnet/ocrnet_hr18_4xb4-80k_ade20k-512x512.py', 'OCRNet', (4, 8, 16, 32)),
    ('mmseg::segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py', 'SegFormer', (4, 8, 16, 32)),
    ('mmseg::segmenter/segmenter_vit-s_mask_8xb1-160k_ade20k-512x512.py', 'Segmenter', None),
    ('mmseg::knet/knet-s3_r50-d8_upernet_8xb2-adamw-80k_ade20k-512x512.py', 'K-Net', (4, 8, 16, 32)),
    ('mmseg::maskformer/maskformer_r50-d32_8xb2-160k_ade20k-512x512.py', 'MaskFormer', (4, 8, 16, 32)),
    ('mmseg::mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py', 'Mask2Former (seg)', (4, 8, 16, 32)),
    ('mmseg::point_rend/pointrend_r50_4xb4-160k_ade20k-512x512.py', 'PointRend (seg)', (4, 8, 16, 32)),
    ('mmseg::beit/beit-base_upernet_8xb2-160k_ade20k-640x640.py', 'BEiT/UperNet', (4, 8, 16, 32)),
    ('mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_res50_8xb64-210e_coco-256x192.py',
     'SimpleBaseline heatmap', (32,)),
    ('mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py',
     'HRNet heatmap', None),
    ('mmpose::body_2d_keypoint/rtmpose/coco/rtmpose-s_8xb256-420e_coco-256x192.py', 'RTMPose', (32,)),
    ('mmpose::body_2d_keypoint/simcc/coco/simcc_res50_8xb64-210e_coco-256x192.py', 'SimCC', (32,)),
    ('mmpose::body_2d_keypoint/topdown_regression/coco/td-reg_res50_rle-8xb64-210e_coco-256x192.py',
     'RLE regression', (32,)),
    ('mmpose::body_2d_keypoint/integral_regression/coco/ipr_res50_dsnt-8xb64-210e_coco-256x256.py',
     'DSNT integral regression', (32,)),
    ('mmpose::body_2d_keypoint/associative_embedding/coco/ae_hrnet-w32_8xb24-300e_coco-512x512.py',
     'Associative Embedding', None),   # planned only: see INFERENCE_ONLY
    ('mmpose::body_2d_keypoint/dekr/coco/dekr_hrnet-w32_8xb10-140e_coco-512x512.py', 'DEKR', (4, 8, 16, 32)),
    ('mmpose::body_2d_keypoint/cid/coco/cid_hrnet-w32_8xb20-140e_coco-512x512.py', 'CID', (4, 8, 16, 32)),
    ('mmpose::body_2d_keypoint/yoloxpose/coco/yoloxpose_s_8xb32-300e_coco-640.py', 'YOLOX-Pose', (8, 16, 32)),
    ('mmpose::body_2d_keypoint/rtmo/coco/rtmo-s_8xb32-600e_coco-640x640.py', 'RTMO', (8, 16, 32)),
]
"""None: a single-level consumer whose strides depend on the family (stride-4 / stride-16 map, fed with every
deeper level concatenated when the family would otherwise leave parameters unused; checked in the test)."""

INFERENCE_ONLY = {'Associative Embedding': 'mmpose 1.3.2 ships it for inference only (its train_pipeline is empty)'}
"""Families whose stock config cannot train, with or without a swap: planned, not trained (README says so)."""
TRAINED = [s for s in SWEEP if s[1] not in INFERENCE_ONLY]
SMALLER = {'DINO': dict(num_queries=100)}   # DINO picks its queries among the 340 tokens of a 128-pixel input

REFUSED = [
    ('mmdet::faster_rcnn/faster-rcnn_r50-caffe_c4-1x_coco.py', 'C4 recipe runs ResNet'),
    ('mmdet::tridentnet/tridentnet_r50-caffe_1x_coco.py', 'C4 recipe runs ResNet'),
    ('mmdet::cornernet/cornernet_hourglass104_8xb6-210e-mstest_coco.py', 'maps of the same stride'),
    ('mmdet::ssd/ssd300_coco.py', 'cannot take the deeper levels'),   # VGG's strides 8 and 16 only
    ('mmdet::detectors/htc_r50-rfp_1x_coco.py', 'recursive FPN'),
    ('mmdet::bytetrack/bytetrack_yolox_x_8xb4-80e_crowdhuman-mot20train_test-mot20test.py', 'wraps model.detector'),
    ('mmseg::dpt/dpt_vit-b16_8xb2-160k_ade20k-512x512.py', 'DPT reassembles ViT tokens'),
    ('mmseg::setr/setr_vit-l-mla_8xb1-160k_ade20k-512x512.py', 'SETR-MLA adds four ViT maps'),
    ('mmpose::body_2d_keypoint/topdown_heatmap/mpii/td-hm_cpm_8xb64-210e_mpii-368x368.py', 'CPM supervises each'),
]


def _family_backbones() -> list[str]:
    """One zoo variant per backbone class (family-agnostic: every registered class, the first variant
    whose levels cover strides 4..32)."""
    from backbones.swap import _levels
    names = []
    for cls in sorted(BACKBONE_CLASSES.values(), key=lambda c: c.__name__):
        for arch in cls.ARCHS:
            if {d['stride'] for d in _levels(cls, arch)} >= {4, 8, 16, 32}:
                names.append(f'{cls.ZOO_PREFIX}-{arch}')
                break
    return names


def _framework(config: str) -> str:
    return config.split('::')[0]


# ---- plans: every config × every family -------------------------------------------------------------------
@pytest.mark.parametrize('config,family,strides', SWEEP, ids=[s[1] for s in SWEEP])
def test_swap_plan_matches_the_stock_strides_for_every_family(config, family, strides):
    from backbones._factory import _zoo
    from backbones.swap import plan_swap, unused_parameters
    for backbone in _family_backbones():
        plan = plan_swap(config, backbone)
        cls, arch = _zoo()[backbone]
        assert unused_parameters(cls, arch, plan.out_indices) == (), (backbone, plan.out_indices)
        if strides is not None:
            assert tuple(plan.new_strides) == strides, (backbone, plan.new_strides)
        else:   # single-level consumer: the stock stride, alone or with every deeper level concatenated, or
            # (heads taking one channel count) the deepest level
            _check_single_level(plan)


def _check_single_level(plan) -> None:
    strides = plan.new_strides
    if any('deepest level' in note for note in plan.notes):
        assert strides == [32], strides
    else:
        assert strides[0] == plan.stock_strides[0] and strides == sorted(strides), strides
        assert len(strides) == 1 or strides[-1] == 32, strides


@pytest.mark.parametrize('config,reason', REFUSED, ids=[r[0].split('/')[-1] for r in REFUSED])
def test_swap_refuses_configs_it_cannot_serve_and_says_why(config, reason):
    from backbones.swap import SwapError, plan_swap
    with pytest.raises(SwapError, match=reason):
        plan_swap(config, 'focalnet-tiny-srf')


def test_swap_rejects_bad_arguments_naming_them(tmp_path):
    from backbones.swap import SwapError, plan_swap
    with pytest.raises(SwapError, match=r"backbone='resnet50' is not accepted"):
        plan_swap(SWEEP[0][0], 'resnet50')
    with pytest.raises(SwapError, match=r'config=.*no such file'):
        plan_swap(str(tmp_path / 'missing.py'), 'focalnet-tiny-srf')
    with pytest.raises(SwapError, match=r'lr=-1 is not accepted'):
        plan_swap(SWEEP[0][0], 'focalnet-tiny-srf', lr=-1)


def test_cli_swap_writes_a_loadable_child_config(tmp_path, capsys):
    from mmengine.config import Config
    from backbones.cli import main
    from backbones.zoo import default_checkpoint, get_checkpoint
    out = tmp_path / 'rtmdet.py'
    assert main(['swap', 'mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py', 'twins-svt-small', '--out', str(out)]) == 0
    cfg = Config.fromfile(str(out))
    entry = get_checkpoint(default_checkpoint('twins-svt-small'))
    assert cfg.model.backbone.type == 'backbones.SVT' and 'deepen_factor' not in cfg.model.backbone
    assert cfg.model.backbone.init_cfg == dict(type='Pretrained', checkpoint=entry.name)
    assert cfg.model.data_preprocessor.bgr_to_rgb is True and list(cfg.model.data_preprocessor.mean) == list(entry.mean)
    assert cfg.optim_wrapper.paramwise_cfg.bypass_duplicate is True      # RTMDet's shared head convs
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert main(['swap', 'mmdet::cornernet/cornernet_hourglass104_8xb6-210e-mstest_coco.py', 'twins-svt-small',
                 '--out', str(tmp_path / 'x.py')]) == 1
    assert 'same stride' in capsys.readouterr().err


# ---- one training step per config ---------------------------------------------------------------------------
def _micro_config(config: str, backbone: str, tmp_path: Path):
    """The swapped config, planned for the family's micro arch (micro channels in the neck/heads)."""
    from mmengine.config import Config
    from backbones._factory import _zoo
    from backbones.swap import plan_swap, write_config
    cls, arch = _zoo()[backbone]
    plan = plan_swap(config, backbone, arch=cls.micro_arch(arch))
    cfg = Config.fromfile(write_config(plan, str(tmp_path / 'swapped.py')))
    cfg.model.backbone.init_cfg = None   # no network in tests; loading by name is tested in test_hub.py
    return cfg, plan


def _det_batch(model, cfg, size):
    from mmdet.testing import demo_mm_inputs
    kinds = {type(m).__name__ for m in model.modules()}
    with_mask = bool(getattr(model, 'with_mask', False)) or any('Mask' in k or 'SOLO' in k or 'Proto' in k
                                                                 for k in kinds)
    packed = demo_mm_inputs(batch_size=2, image_shapes=[(3, size, size)] * 2, num_items=[3, 2], num_classes=3,
                            with_mask=with_mask, with_semantic='Panoptic' in type(model).__name__
                            or 'Mask2Former' in type(model).__name__)
    for sample in packed['data_samples']:
        sample.set_metainfo(dict(batch_input_shape=(size, size), pad_shape=(size, size)))
    return packed


def _seg_batch(model, cfg, size):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    gen = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(2):
        inputs.append(torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=gen))
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 4, (1, size, size), generator=gen))
        sample.set_metainfo(dict(img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size)))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


POSE_STEPS = ('GetBBoxCenterScale', 'TopdownAffine', 'BottomupRandomAffine', 'GenerateTarget',
              'BottomupGetHeatmapMask', 'PackPoseInputs')


def _pose_batch(model, cfg, size):
    """Two synthetic 224×224 images through the target-making steps of the stock train pipeline (one person
    per image for top-down configs, two for bottom-up ones), so the labels are the codec's own."""
    from mmengine.dataset import Compose
    from mmpose.registry import TRANSFORMS
    rng = np.random.RandomState(0)
    dataset = cfg.train_dataloader.dataset
    while 'pipeline' not in dataset and 'dataset' in dataset:
        dataset = dataset.dataset
    steps = [step for step in dataset.pipeline if step['type'].split('.')[-1] in POSE_STEPS]
    if not any(s['type'] == 'GenerateTarget' for s in steps):
        raise AssertionError(f'no GenerateTarget in the train pipeline: {dataset.pipeline}')
    pipeline = Compose([TRANSFORMS.build(step) for step in steps])
    people = 1 if any(s['type'] == 'TopdownAffine' for s in steps) else 2
    boxes = np.array([[20, 30, 140, 200], [60, 10, 200, 150]], np.float32)[:people]
    inputs, samples = [], []
    for i in range(2):
        corner, extent = boxes[:, None, :2], boxes[:, None, 2:] - boxes[:, None, :2]
        results = dict(img=rng.randint(0, 256, (224, 224, 3), np.uint8), img_shape=(224, 224),
                       ori_shape=(224, 224), bbox=boxes, bbox_score=np.ones(people, np.float32),
                       keypoints=corner + rng.rand(people, 17, 2).astype(np.float32) * extent,
                       keypoints_visible=np.ones((people, 17), np.float32), id=i, img_id=i,
                       category_id=np.ones(people, np.int64), flip_indices=list(range(17)),
                       area=np.full(people, 120.0 * 150, np.float32), invalid_segs=[])
        packed = pipeline(results)
        inputs.append(packed['inputs'])
        samples.append(packed['data_samples'])
    return dict(inputs=inputs, data_samples=samples)


def _strides_into(module, size: int, store: list) -> object:
    def hook(_, args, kwargs):
        feats = args[0] if args else next(iter(kwargs.values()))
        feats = [feats] if isinstance(feats, torch.Tensor) else feats
        store.append([round(size / f.shape[-1]) for f in feats if isinstance(f, torch.Tensor) and f.dim() == 4])
    return module.register_forward_pre_hook(hook, with_kwargs=True)


def _expected_prior_strides(model) -> list[tuple[str, object, list[float]]]:
    """(name, module, the strides it assumes) for every head with a prior generator and every RoI extractor."""
    found = []
    for name, module in model.named_modules():
        generator = getattr(module, 'prior_generator', None)
        if generator is not None and hasattr(generator, 'strides'):
            found.append((name, module, [float(s[0]) if isinstance(s, (tuple, list)) else float(s)
                                         for s in generator.strides]))
        elif isinstance(getattr(module, 'featmap_strides', None), (list, tuple)):
            found.append((name, module, [float(s) for s in module.featmap_strides]))
    return found


def _strides_match(assumed: list[float], got: list[int]) -> bool:
    """Exact, or (YOLACT) recipe-size strides: n / ceil(n / s) for one input side n (550 for YOLACT)."""
    if len(got) < len(assumed):
        return False
    got = got[:len(assumed)]
    if all(a == int(a) for a in assumed):
        return [int(a) for a in assumed] == got
    return any(all(abs(n / -(-n // g) - a) < 0.01 for a, g in zip(assumed, got)) for n in range(256, 1400))


def _no_network_init(cfg: dict) -> None:
    """Drop Pretrained init_cfgs outside the backbone (e.g. DEKR's rescore net): no network in tests."""
    for key, value in list(cfg.items()):
        if key == 'init_cfg' and isinstance(value, dict) and value.get('type') == 'Pretrained':
            cfg[key] = None
        elif isinstance(value, dict):
            _no_network_init(value)


def _small_training(train_cfg: dict) -> None:
    """Fewer sampled RoIs / proposals in two-stage training (the recipe's own numbers are for 1333×800)."""
    for value in train_cfg.values() if isinstance(train_cfg, dict) else ():
        if isinstance(value, dict):
            if isinstance(value.get('sampler'), dict) and 'num' in value['sampler']:
                value['sampler']['num'] = min(value['sampler']['num'], 64)
            for key in ('nms_pre', 'max_per_img'):
                if key in value:
                    value[key] = min(value[key], 200)
            _small_training(value)
        elif isinstance(value, list):
            for item in value:
                _small_training({'_': item})


@pytest.mark.slow
@pytest.mark.parametrize('config,family,strides', TRAINED, ids=[s[1] for s in TRAINED])
def test_swapped_stock_config_trains_one_step(config, family, strides, tmp_path):
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope
    from backbones.zoo import default_checkpoint, get_checkpoint
    backbones = _family_backbones()
    backbone = backbones[[s[0] for s in TRAINED].index(config) % len(backbones)]   # families in turn
    cfg, plan = _micro_config(config, backbone, tmp_path)
    scope = _framework(config)
    entry = get_checkpoint(default_checkpoint(backbone))
    preprocessor = cfg.model.data_preprocessor
    assert preprocessor.bgr_to_rgb is True, 'zoo weights take RGB'
    assert list(preprocessor.mean) == list(entry.mean) and list(preprocessor.std) == list(entry.std)
    if scope == 'mmdet':
        preprocessor.pop('batch_augments', None)    # YOLOX's random batch resizing: not at a 128-pixel test size
    size = SIZE
    cfg.model.update(SMALLER.get(family, {}))
    if scope == 'mmseg':
        preprocessor.size = (size, size)
    _no_network_init(cfg.model)
    _small_training(cfg.model.get('train_cfg') or {})
    from mmengine.logging import MessageHub
    hub = MessageHub.get_current_instance()
    hub.update_info('epoch', 0)   # TOOD and others read the training progress
    hub.update_info('iter', 0)
    torch.manual_seed(0)
    import importlib
    importlib.import_module(f'{scope}.utils').register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope(scope):
        from mmengine.registry import MODELS
        model = MODELS.build(cfg.model)
        model.init_weights()
        model.train()
        optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
        batch = {'mmdet': _det_batch, 'mmseg': _seg_batch, 'mmpose': _pose_batch}[scope](model, cfg, size)
        data = model.data_preprocessor(batch, True)
        assert data['inputs'].shape[1] == 3
        hooks, into_heads, backbone_out, neck_out = [], [], [], []
        side = data['inputs'].shape[-1]
        hooks.append(model.backbone.register_forward_hook(
            lambda m, a, out: backbone_out.append([round(side / o.shape[-1]) for o in out])))
        if getattr(model, 'neck', None) is not None:
            hooks.append(model.neck.register_forward_hook(lambda m, a, out: neck_out.append(
                [round(side / o.shape[-1]) for o in ([out] if isinstance(out, torch.Tensor) else out)])))
        priors = _expected_prior_strides(model)
        for name, module, _ in priors:
            store: list = []
            into_heads.append((name, store))
            hooks.append(_strides_into(module, data['inputs'].shape[-1], store))
        before = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
        losses = model(**data, mode='loss')
        loss, _ = model.parse_losses(losses)
        optim_wrapper.backward(loss)
        for hook in hooks:
            hook.remove()
    assert torch.isfinite(loss), losses
    no_grad = [n for n, p in model.backbone.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f'{backbone} in {family}: {len(no_grad)} backbone parameters without gradient: {no_grad[:5]}'
    optim_wrapper.step()
    moved = [n for n, p in model.backbone.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert moved, 'the optimizer step did not update the backbone'
    assert backbone_out and backbone_out[0] == plan.new_strides, (backbone_out, plan.new_strides)
    if strides is not None:
        assert tuple(backbone_out[0]) == strides, f'{family}: backbone strides {backbone_out[0]}, recipe {strides}'
    else:
        _check_single_level(plan)
    for (name, _, expected), (_, seen) in zip(priors, into_heads):
        seen = seen or neck_out     # heads whose loss() calls self.forward directly: what the neck gave them
        assert seen, f'{name} was not called'
        assert _strides_match(expected, seen[0]), \
            f'{family}/{backbone}: {name} assumes strides {expected}, gets {seen[0]}'


# ---- the real data pipeline, through the Runner ------------------------------------------------------------
def _demo_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('demo')
    tool = REPO / 'tools' / 'make_demo_data.py'
    assert tool.exists(), 'tools/make_demo_data.py (the lead\'s demo data) is missing'
    subprocess.run([sys.executable, str(tool), '--out', str(out), '--train', '2', '--val', '1',
                    '--size', str(SIZE)], check=True, timeout=300)
    return out


@pytest.mark.slow
def test_swapped_config_trains_one_iteration_through_the_runner(tmp_path, tmp_path_factory):
    """RetinaNet with a Twins backbone, one iteration of the stock pipeline (at demo size) on the demo data."""
    from mmengine.config import Config
    from mmengine.runner import Runner
    from backbones.swap import write_swapped_config
    data = _demo_data(tmp_path_factory)
    out = write_swapped_config('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', 'twins-svt-small',
                               str(tmp_path / 'swapped.py'))
    cfg = Config.fromfile(out)
    cfg.model.backbone.init_cfg = None
    loader = cfg.train_dataloader
    loader.batch_size, loader.num_workers, loader.persistent_workers = 2, 0, False
    dataset = loader.dataset
    dataset.data_root = str(data)
    dataset.ann_file = 'annotations/instances_train.json'
    dataset.data_prefix = dict(img='images/train/')
    dataset.metainfo = dict(classes=('circle', 'square', 'triangle'))
    for step in dataset.pipeline:
        if step['type'] == 'Resize':
            step['scale'] = (SIZE, SIZE)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=1, val_interval=10)
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    cfg.test_dataloader = cfg.test_evaluator = cfg.test_cfg = None
    cfg.param_scheduler = []
    cfg.default_hooks = dict(logger=dict(type='LoggerHook', interval=1))
    cfg.visualizer = dict(type='Visualizer', vis_backends=[])
    cfg.work_dir = str(tmp_path / 'work')
    cfg.launcher = 'none'
    cfg.env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
    runner = Runner.from_cfg(cfg)
    before = {k: v.clone() for k, v in runner.model.backbone.state_dict().items()}
    runner.train()
    assert runner.iter == 1
    after = runner.model.backbone.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), 'the backbone was not updated'


def test_heads_that_need_contiguous_maps_get_them_through_the_neck():
    """DEKR's head runs mmcv DeformConv2d, which refuses channels-last maps: the swap wraps the neck in
    backbones.ContiguousMaps (the stock FeatureMapProcessor inside), for every family."""
    from backbones.swap import plan_swap
    config = 'mmpose::body_2d_keypoint/dekr/coco/dekr_hrnet-w32_8xb10-140e_coco-512x512.py'
    for backbone in _family_backbones():
        plan = plan_swap(config, backbone)
        neck = plan.model_overrides['neck']
        assert neck['type'] == 'backbones.ContiguousMaps' and neck['_delete_'] is True
        assert neck['neck']['type'] == 'mmpose.FeatureMapProcessor', neck
        assert any('ContiguousMaps' in note for note in plan.notes)
    import torch
    from backbones.registry import ContiguousMaps
    maps = (torch.randn(1, 8, 5, 6).contiguous(memory_format=torch.channels_last),)
    assert not maps[0].is_contiguous()
    out = ContiguousMaps()(maps)
    assert out[0].is_contiguous() and torch.equal(out[0], maps[0])
