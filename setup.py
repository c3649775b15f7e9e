"""Distribution of `backbones`: FocalNet, Twins (PCPVT/SVT) and HRFormer for OpenMMLab dense prediction."""
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent


class BuildWithData(build_py):
    """Copy configs/ and model_cards/ into the built package as backbones/_data/, so that pip users find
    them without a git clone (backbones/resources.py); editable installs read the checkout instead."""

    def run(self):
        super().run()
        if getattr(self, 'editable_mode', False):
            return
        for folder in ('configs', 'model_cards'):
            target = Path(self.build_lib) / 'backbones' / '_data' / folder
            shutil.copytree(HERE / folder, target, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))


OPENMMLAB = ['mmengine==0.10.7', 'mmcv==2.1.0', 'mmdet==3.3.0', 'mmsegmentation==1.2.2',
             # mmpose 1.3.2 must be installed with --no-deps (its metadata pulls chumpy and a CUDA
             # torchvision); tools/setup_env.sh does it. Its real runtime needs:
             'json-tricks', 'munkres', 'matplotlib', 'scipy', 'xtcocotools', 'pycocotools',
             'setuptools>=77.0.3,<81']

setup(
    name='backbones',
    version='0.1.0',
    description='FocalNet, Twins and HRFormer backbones for mmdet / mmseg / mmpose, with verified weights',
    long_description=(HERE / 'README.md').read_text() if (HERE / 'README.md').exists() else '',
    long_description_content_type='text/markdown',
    python_requires='>=3.9',
    packages=find_packages(include=['backbones', 'backbones.*']),
    cmdclass={'build_py': BuildWithData},
    install_requires=['torch>=2.1', 'numpy', 'filelock', 'tqdm'],
    extras_require={
        'openmmlab': OPENMMLAB,
        'safetensors': ['safetensors'],
        'test': ['pytest', 'pytest-timeout', 'safetensors', 'transformers', 'onnxruntime', 'onnx'],
    },
    entry_points={'console_scripts': ['backbones=backbones.cli:main']},
    license='Apache-2.0',
)
