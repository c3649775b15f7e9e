"""Registration: `type='backbones.X'` builds inside the mmdet, mmseg and mmpose scopes, in a fresh
interpreter with and without `custom_imports`, and never clashes with mmseg's PCPVT/SVT or mmpose's HRFormer."""
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip('mmengine', reason='OpenMMLab stack not installed: run tools/setup_env.sh')

SCOPES = {'mmdet': 'mmdet.registry', 'mmseg': 'mmseg.registry', 'mmpose': 'mmpose.registry'}


def run_fresh(code: str) -> str:
    result = subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize('scope', sorted(SCOPES))
@pytest.mark.parametrize('custom_imports', [True, False])
def test_builds_in_each_scope_in_a_fresh_interpreter(scope, custom_imports):
    out = run_fresh(f'''
        import torch
        from mmengine.config import Config
        from mmengine.registry import DefaultScope, init_default_scope
        from {SCOPES[scope]} import MODELS
        cfg = Config(dict(
            {"custom_imports=dict(imports=['backbones'], allow_failed_imports=False)," if custom_imports else ""}
            backbone=dict(type='backbones.FocalNet', arch=dict(embed_dim=8, depths=[1, 1, 1, 1]))))
        if cfg.get('custom_imports'):
            import importlib
            for name in cfg.custom_imports['imports']:
                importlib.import_module(name)
        init_default_scope('{scope}')
        model = MODELS.build(cfg.backbone)
        outs = model(torch.randn(1, 3, 64, 64))
        print(type(model).__module__, [tuple(o.shape) for o in outs])
    ''')
    assert out.startswith('backbones.focalnet'), out
    assert '(1, 64, 2, 2)' in out


def test_no_clash_with_upstream_classes():
    import mmpose.models  # noqa: F401  (registers mmpose's HRFormer)
    import mmseg.models  # noqa: F401  (registers mmseg's PCPVT/SVT)
    from mmpose.registry import MODELS as POSE
    from mmseg.registry import MODELS as SEG

    import backbones
    import backbones.registry as ours

    assert SEG.get('PCPVT').__module__.startswith('mmseg')
    assert SEG.get('SVT').__module__.startswith('mmseg')
    assert POSE.get('HRFormer').__module__.startswith('mmpose')
    for name in ('PCPVT', 'SVT', 'HRFormer', 'FocalNet', 'S3'):
        assert SEG.get(f'backbones.{name}') is getattr(backbones, name)
        assert ours.MODELS.get(name) is getattr(backbones, name)
