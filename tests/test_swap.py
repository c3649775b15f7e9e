"""`backbones swap`: a zoo backbone swapped into stock mmdet / mmseg / mmpose configs.

The end-to-end test trains one iteration of each swapped stock config (RetinaNet, Mask R-CNN, UperNet,
top-down heatmap pose) for each family on the demo data written by `tools/make_demo_data.py`. It needs
mmdet, mmseg and mmpose: without them these tests FAIL (they are never skipped).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STOCK = {
    'retinanet': 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
    'mask-rcnn': 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
    'upernet': 'mmseg::upernet/upernet_r50_4xb4-80k_ade20k-512x512.py',
    'pose': 'mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_res50_8xb64-210e_coco-256x192.py',
}
FAMILY_BACKBONES = ('focalnet-tiny-srf', 'twins-svt-small', 'hrformer-small')
SIZE = 128


def _channels(backbone: str) -> list[int]:
    import torch
    from backbones._factory import _zoo
    cls, arch = _zoo()[backbone]
    with torch.device('meta'):
        return [d['channels'] for d in cls(arch=arch).feature_info]


@pytest.mark.parametrize('backbone', FAMILY_BACKBONES)
@pytest.mark.parametrize('kind', sorted(STOCK))
def test_swap_writes_the_expected_overrides(kind, backbone, tmp_path):
    from mmengine.config import Config
    from backbones.cli import main
    from backbones.zoo import IMAGENET_MEAN, default_checkpoint
    out = tmp_path / f'{kind}_{backbone}.py'
    assert main(['swap', STOCK[kind], backbone, '--out', str(out)]) == 0
    cfg = Config.fromfile(str(out))
    bb = cfg.model.backbone
    assert bb.type.startswith('backbones.') and 'depth' not in bb          # ResNet keys deleted
    assert bb.init_cfg == dict(type='Pretrained', checkpoint=default_checkpoint(backbone))
    assert list(cfg.model.data_preprocessor.mean) == list(IMAGENET_MEAN)
    opt = cfg.optim_wrapper
    assert opt.optimizer.type == 'AdamW' and opt.paramwise_cfg.norm_decay_mult == 0.0
    assert opt.paramwise_cfg.custom_keys['relative_position_bias_table'] == dict(decay_mult=0.0)
    channels = _channels(backbone)
    if kind in ('retinanet', 'mask-rcnn'):
        assert list(cfg.model.neck.in_channels) == channels
    elif kind == 'upernet':
        assert list(cfg.model.decode_head.in_channels) == channels
        assert cfg.model.auxiliary_head.in_channels == channels[cfg.model.auxiliary_head.in_index]
    else:
        assert cfg.model.head.in_channels in channels and len(bb.out_indices) == 1


def _demo_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('demo')
    tool = REPO / 'tools' / 'make_demo_data.py'
    assert tool.exists(), 'tools/make_demo_data.py (the lead\'s demo data) is missing'
    subprocess.run([sys.executable, str(tool), '--out', str(out), '--train', '4', '--val', '2',
                    '--size', str(SIZE)], check=True, timeout=300)
    return out


def _small_pipeline(pipeline: list) -> list:
    """The stock training pipeline at demo size (no 1333×800 resizes on a CPU)."""
    for step in pipeline:
        if step['type'] in ('Resize', 'RandomResize'):
            step['scale'] = (SIZE, SIZE)
            step.pop('ratio_range', None) if step['type'] == 'Resize' else None
        if step['type'] == 'RandomCrop':
            step['crop_size'] = (SIZE, SIZE)
    return pipeline


def _point_at_demo_data(cfg, kind: str, data: Path) -> None:
    loader = cfg.train_dataloader
    loader.batch_size, loader.num_workers, loader.persistent_workers = 2, 0, False
    dataset = loader.dataset
    while 'dataset' in dataset:  # RepeatDataset / ConcatDataset wrappers
        dataset = dataset.dataset
    dataset.data_root = str(data)
    if kind in ('retinanet', 'mask-rcnn'):
        dataset.ann_file = 'annotations/instances_train.json'
        dataset.data_prefix = dict(img='images/train/')
        dataset.metainfo = dict(classes=('circle', 'square', 'triangle'))
    elif kind == 'upernet':
        dataset.type = 'BaseSegDataset'
        dataset.img_suffix, dataset.seg_map_suffix = '.png', '.png'
        dataset.data_prefix = dict(img_path='images/train', seg_map_path='seg/train')
        dataset.metainfo = dict(classes=('background', 'circle', 'square', 'triangle'),
                                palette=[[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]])
        cfg.model.data_preprocessor.size = (SIZE, SIZE)
        cfg.model.decode_head.num_classes = 4
        cfg.model.auxiliary_head.num_classes = 4
    else:
        dataset.ann_file = 'annotations/keypoints_train.json'
        dataset.data_prefix = dict(img='images/train/')
        dataset.metainfo = dict(from_file=str(data / 'shapes_keypoints.py'))
        dataset.data_mode = 'topdown'
        cfg.model.head.out_channels = 3
    dataset.pipeline = _small_pipeline(list(dataset.pipeline))
    if kind == 'upernet':  # demo label 0 is a class (background), not "ignore"
        dataset.reduce_zero_label = False
        for step in dataset.pipeline:
            if step['type'] == 'LoadAnnotations':
                step['reduce_zero_label'] = False


@pytest.mark.slow
@pytest.mark.parametrize('backbone', FAMILY_BACKBONES)
@pytest.mark.parametrize('kind', sorted(STOCK))
def test_swapped_stock_config_trains_one_iteration_on_demo_data(kind, backbone, tmp_path, tmp_path_factory):
    import torch
    from mmengine.config import Config
    from mmengine.runner import Runner
    from backbones.swap import write_swapped_config
    data = _demo_data(tmp_path_factory)
    out = write_swapped_config(STOCK[kind], backbone, str(tmp_path / 'swapped.py'))
    cfg = Config.fromfile(out)
    cfg.model.backbone.init_cfg = None  # no network in tests; loading by name is tested in test_hub.py
    _point_at_demo_data(cfg, kind, data)
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
