"""Every config in configs/ loads (through its mmdet::/mmseg::/mmpose:: base) and builds its model."""
from pathlib import Path

import pytest

pytest.importorskip('mmdet', reason='OpenMMLab stack not installed: run tools/setup_env.sh')

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (REPO / 'configs').rglob('*.py') if not p.name.startswith('_'))


def build_model(cfg):
    import backbones.registry  # noqa: F401
    scope = cfg.get('default_scope')
    if scope == 'mmdet':
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    elif scope == 'mmseg':
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    elif scope == 'mmpose':
        from mmpose.registry import MODELS
        from mmpose.utils import register_all_modules
    else:
        raise AssertionError(f'config has no mmdet/mmseg/mmpose default_scope: {scope!r}')
    register_all_modules(init_default_scope=True)
    return MODELS.build(cfg.model)


def test_configs_exist():
    assert len(CONFIGS) >= 3


@pytest.mark.parametrize('path', CONFIGS, ids=[str(p.relative_to(REPO / 'configs')) for p in CONFIGS])
def test_config_builds(path):
    from mmengine.config import Config
    cfg = Config.fromfile(str(path))
    assert cfg.get('custom_imports', {}).get('imports') == ['backbones'], 'configs must import backbones'
    backbone_cfg = cfg.model.get('backbone') or cfg.model.get('encoder', {}).get('backbone')
    assert str(backbone_cfg['type']).startswith('backbones.'), backbone_cfg['type']
    model = build_model(cfg)
    backbone = getattr(model, 'backbone', None)
    assert type(backbone).__module__.startswith('backbones.'), type(backbone)
    # the neck (when there is one with in_channels) must match the backbone's outputs
    neck = cfg.model.get('neck')
    if isinstance(neck, dict) and 'in_channels' in neck and isinstance(neck['in_channels'], (list, tuple)):
        assert list(neck['in_channels']) == backbone.out_channels
