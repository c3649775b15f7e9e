# Demo pose model: top-down heatmaps with a small HRFormer (official pose switches: bilinear fusion,
# highest-resolution output), trained from scratch on the demo triangles' 3 keypoints on a CPU.
_base_ = ['mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_hrformer-small_8xb32-210e_coco-256x192.py',
          './_hrformer_demo_arch.py']
custom_imports = dict(imports=['backbones'], allow_failed_imports=False)

data_root = 'data/demo/'
max_iters = 300
codec = dict(type='MSRAHeatmap', input_size=(64, 64), heatmap_size=(16, 16), sigma=1)

model = dict(
    backbone=dict(_delete_=True, type='backbones.HRFormer',
                  arch={{_base_.hrformer_demo_arch}},
                  out_indices=(0,), with_rpe=False, fuse_upsample='bilinear',
                  norm_cfg=dict(type='BN'), init_cfg=None),
    head=dict(in_channels=16, out_channels=3, decoder=codec),
    test_cfg=dict(flip_test=False))

train_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='RandomBBoxTransform', rotate_factor=10, scale_factor=(0.9, 1.1)),
    dict(type='TopdownAffine', input_size=codec['input_size']),
    dict(type='GenerateTarget', encoder=codec),
    dict(type='PackPoseInputs'),
]
val_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='TopdownAffine', input_size=codec['input_size']),
    dict(type='PackPoseInputs'),
]
_dataset = dict(type='CocoDataset', data_root=data_root, data_mode='topdown',
                metainfo=dict(from_file=data_root + 'shapes_keypoints.py'))
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    sampler=dict(_delete_=True, type='InfiniteSampler', shuffle=True),
    dataset=dict(_delete_=True, **_dataset, ann_file='annotations/keypoints_train.json',
                 data_prefix=dict(img='images/train/'), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, **_dataset, ann_file='annotations/keypoints_val.json',
                 bbox_file=None, data_prefix=dict(img='images/val/'), pipeline=val_pipeline,
                 test_mode=True))
test_dataloader = val_dataloader
val_evaluator = dict(type='CocoMetric', ann_file=data_root + 'annotations/keypoints_val.json')
test_evaluator = val_evaluator

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(optimizer=dict(lr=2e-3), clip_grad=dict(max_norm=10, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=30, end=max_iters, eta_min=1e-5),
]
auto_scale_lr = dict(enable=False)
default_hooks = dict(logger=dict(interval=20),
                     checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=2, save_best=None))
custom_hooks = []
log_processor = dict(by_epoch=False)
visualizer = dict(vis_backends=[dict(type='LocalVisBackend')])
randomness = dict(seed=0)
