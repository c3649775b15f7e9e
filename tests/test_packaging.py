"""Configs, model cards and the demo-data generator reach pip users (no git clone) through the wheel."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from backbones import cli, resources

REPO = Path(__file__).resolve().parents[1]


def test_checkout_resources_resolve():
    assert resources.data_root() == REPO
    names = resources.list_configs()
    assert 'demo/retinanet_focalnet-demo_demo-shapes.py' in names
    assert not any(Path(n).name.startswith('_') for n in names)   # helper bases are not listed
    by_stem = resources.find_config('fpn_twins-demo_demo-shapes')
    assert by_stem == REPO / 'configs' / 'demo' / 'fpn_twins-demo_demo-shapes.py'
    assert resources.find_config('twins/retinanet_twins-svt-s_fpn_1x_coco.py').is_file()
    assert resources.model_card('hrformer').read_text().startswith('# HRFormer')


def test_unknown_config_and_card_name_alternatives():
    with pytest.raises(FileNotFoundError, match='similar: .*retinanet_'):
        resources.find_config('retinanet_focalnet-nonexistent')
    with pytest.raises(FileNotFoundError, match="available: \\['focalnet', 'hrformer', 's3', 'twins'\\]"):
        resources.model_card('swin')


def test_cli_lists_configs_and_prints_cards(capsys):
    assert cli.main(['configs', 'demo']) == 0
    listed = capsys.readouterr().out.split()
    assert listed == [n for n in resources.list_configs() if 'demo' in n] and len(listed) >= 9
    assert cli.main(['card', 'twins']) == 0
    assert 'both* height and width' in capsys.readouterr().out  # the padding note is in the card


def test_cli_demo_data(tmp_path):
    assert cli.main(['demo-data', '--out', str(tmp_path / 'demo'), '--train', '2', '--val', '1']) == 0
    assert len(list((tmp_path / 'demo' / 'images' / 'train').glob('*.png'))) == 2
    assert (tmp_path / 'demo' / 'annotations' / 'keypoints_val.json').is_file()


@pytest.mark.slow
def test_wheel_ships_configs_and_model_cards(tmp_path):
    source = tmp_path / 'src'
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        '.venv', '.git', 'work_dirs', 'data', 'build', 'dist', '*.egg-info', '__pycache__', 'golden',
        '.pytest_cache'))
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation',
                    '-w', str(tmp_path / 'wheels'), str(source)], check=True)
    wheel, = (tmp_path / 'wheels').glob('backbones-*.whl')
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in ('backbones/_data/configs/demo/retinanet_focalnet-demo_demo-shapes.py',
                     'backbones/_data/configs/demo/_hrformer_demo_arch.py',
                     'backbones/_data/configs/hrformer/td-hm_hrformer-s_8xb32-210e_coco-256x192.py',
                     'backbones/_data/model_cards/focalnet.md', 'backbones/demo_data.py'):
        assert expected in names, expected
    configs_in_wheel = {n for n in names if n.startswith('backbones/_data/configs/') and n.endswith('.py')}
    assert len(configs_in_wheel) == len(list((REPO / 'configs').rglob('*.py')))

    # installed somewhere else, used from a folder with no checkout in sight
    target = tmp_path / 'site'
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target', str(target),
                    str(wheel)], check=True)
    probe = ('import backbones.resources as r; print(r.data_root()); '
             'print(r.find_config("td-hm_hrformer-demo_demo-shapes"))')
    out = subprocess.run([sys.executable, '-c', probe], cwd=tmp_path, check=True, capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=str(target))).stdout.split()
    assert out[0] == str(target / 'backbones' / '_data')
    assert out[1] == str(target / 'backbones' / '_data' / 'configs' / 'demo' / 'td-hm_hrformer-demo_demo-shapes.py')
