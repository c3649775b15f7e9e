"""Distribution of `backbones`: FocalNet, Twins (PCPVT/SVT) and HRFormer for OpenMMLab dense prediction."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def package_data_files(folder: str) -> list:
    """Configs and model cards ship inside the wheel (backbones/_data/...), so pip users find them."""
    root = HERE / folder
    return [str(p.relative_to(HERE)) for p in root.rglob('*') if p.is_file()] if root.exists() else []


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
    include_package_data=True,
    data_files=[('share/backbones/configs', []), ],
    package_data={'backbones': ['_data/**/*']},
    install_requires=['torch>=2.1', 'numpy', 'filelock', 'tqdm'],
    extras_require={
        'openmmlab': OPENMMLAB,
        'safetensors': ['safetensors'],
        'test': ['pytest', 'pytest-timeout', 'safetensors', 'transformers', 'onnxruntime', 'onnx'],
    },
    entry_points={'console_scripts': ['backbones=backbones.cli:main']},
    license='Apache-2.0',
)
