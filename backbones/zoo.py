"""The checkpoint zoo: ONE declarative table of every pretrained checkpoint the package knows.

Everything that needs pretrained weights reads this table: `backbones.hub.resolve_checkpoint` (downloads),
`create_backbone(..., pretrained=True)`, `init_cfg=dict(type='Pretrained', checkpoint=NAME)`, the
`backbones` command line, `tools/swap_backbone.py` and `tools/gen_model_cards.py` (model cards).

Names are `<backbone zoo name>_<tag>`, e.g. `focalnet-tiny-srf_in1k`, `twins-pcpvt-small_upernet-ade20k`,
`hrformer-small_coco-256x192`. A checkpoint is one set of weights; its `sources` are copies of it in order
of preference (official release, timm / HF hub copies, OpenMMLab's converted files), each with its own
layout and, where one was ever published, its hash. Sources that are web pages (Google Drive, OneDrive) are
listed for provenance and manual download (`backbones download NAME --from-file FILE`); they are never
fetched automatically.

Hashes: `sha256` only where a full hash was published (none of the upstream projects publish one today;
the field stays None — never filled by guessing). OpenMMLab file names carry `sha256[:8]` by their
`publish_model.py` convention; that prefix is checked (`name_hash`). Everything else is trust-on-first-use:
the hub records the hash of the first download and verifies every later use against it.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
from typing import Optional

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

LAYOUTS = ('ours', 'official', 'official-dense', 'timm', 'hf', 'mmseg', 'mmpose', 'mmpose-0.x')
"""Key layouts a source can be in; the family converters detect them automatically."""

_NAME_HASH = re.compile(r'-([0-9a-f]{8})(?:_\d{8})?\.(?:pth|pt|safetensors)$')


@dataclasses.dataclass(frozen=True)
class Source:
    """One downloadable (or hand-downloadable) copy of a checkpoint."""
    url: str
    host: str                       # 'github-release', 'azure-blob', 'hf-timm', 'hf-transformers',
                                    # 'openmmlab', 'google-drive', 'onedrive', 'test'
    layout: str                     # one of LAYOUTS
    sha256: Optional[str] = None    # full sha256, only where published
    direct: bool = True             # False: a web page to download by hand, never fetched automatically
    license: Optional[str] = None   # when the copy's licence differs from the checkpoint's

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f'{self.url}: unknown layout {self.layout!r}; known {LAYOUTS}')
        if self.sha256 is not None and not re.fullmatch(r'[0-9a-f]{64}', self.sha256):
            raise ValueError(f'{self.url}: sha256 must be 64 lower-case hex digits')

    @property
    def name_hash(self) -> Optional[str]:
        """The 8-hex sha256 prefix carried by an OpenMMLab file name (publish_model.py convention)."""
        if self.host != 'openmmlab':
            return None
        match = _NAME_HASH.search(self.url)
        return match.group(1) if match else None

    @property
    def hash_status(self) -> str:
        if self.sha256:
            return 'sha256 published'
        if self.name_hash:
            return f'sha256 prefix {self.name_hash} in file name'
        return 'no hash published (trust on first use)' if self.direct else 'manual download, no hash'


@dataclasses.dataclass(frozen=True)
class Metric:
    """A published result of the checkpoint, with where it was published."""
    task: str          # 'classification', 'detection', 'instance segmentation', 'segmentation', 'pose'
    dataset: str
    metric: str        # 'top-1', 'box AP', 'mask AP', 'mIoU', 'mIoU (ms+flip)', 'AP'
    value: float
    where: str         # URL of the publication (README / metafile at a commit)
    setting: str = ''  # e.g. 'Mask R-CNN 1x', 'UperNet 160k, 512x512', '256x192, flip test'


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One set of pretrained weights and everything known about it."""
    name: str                      # '<backbone>_<tag>'
    backbone: str                  # backbone zoo name: 'focalnet-tiny-srf', 'twins-svt-small', 'hrformer-small'
    sources: tuple[Source, ...]    # preference order
    task: str                      # task the weights were trained for
    dataset: str                   # 'ImageNet-1K', 'ImageNet-22K', 'COCO', 'ADE20K', ...
    license: str
    paper: str                     # arXiv URL
    code: str                      # upstream code the weights come from
    metrics: tuple[Metric, ...] = ()
    arch_overrides: tuple[tuple[str, object], ...] = ()  # official kwargs that differ from the variant
    mean: tuple[float, float, float] = IMAGENET_MEAN    # input normalisation the weights expect (RGB, 0..255)
    std: tuple[float, float, float] = IMAGENET_STD
    notes: str = ''

    def __post_init__(self) -> None:
        if not self.name.startswith(self.backbone + '_'):
            raise ValueError(f'checkpoint {self.name!r} must be named {self.backbone!r}_<tag>')
        if not self.sources:
            raise ValueError(f'checkpoint {self.name!r} has no source')

    @property
    def tag(self) -> str:
        return self.name[len(self.backbone) + 1:]

    @property
    def family(self) -> str:
        return self.backbone.split('-')[0]

    @property
    def direct_sources(self) -> tuple[Source, ...]:
        return tuple(s for s in self.sources if s.direct)


# ---- sources, by host -------------------------------------------------------------------------------
FN_GITHUB = 'https://github.com/microsoft/FocalNet/releases/download/v1.0.0'
FN_BLOB = 'https://projects4jw.blob.core.windows.net/focalnet/release'
MMSEG_TWINS = 'https://download.openmmlab.com/mmsegmentation/v0.5/twins'
MMSEG_TWINS_PRE = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/twins'
MMPOSE = 'https://download.openmmlab.com/mmpose'

FN_PAPER, FN_CODE = 'https://arxiv.org/abs/2203.11926', 'https://github.com/microsoft/FocalNet'
FN_README = 'https://github.com/microsoft/FocalNet/blob/e8514bd/README.md'
TW_PAPER, TW_CODE = 'https://arxiv.org/abs/2104.13840', 'https://github.com/Meituan-AutoML/Twins'
TW_README = 'https://github.com/Meituan-AutoML/Twins/blob/c1ff671/README.md'
MMSEG_TWINS_META = ('https://github.com/open-mmlab/mmsegmentation/blob/v1.2.2/configs/twins/metafile.yaml')
HR_PAPER, HR_CODE = 'https://arxiv.org/abs/2110.09408', 'https://github.com/HRNet/HRFormer'
HR_README = 'https://github.com/HRNet/HRFormer/blob/1245b88/README.md'
MMPOSE_HR_META = ('https://github.com/open-mmlab/mmpose/blob/v1.3.2/configs/body_2d_keypoint/'
                  'topdown_heatmap/coco/hrformer_coco.yml')
S3_GITHUB = 'https://github.com/silent-chen/AutoFormerV2-model-zoo/releases/download/v1.0.0'
TIMM_GITHUB = 'https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights'
S3_PAPER, S3_CODE = 'https://arxiv.org/abs/2111.14725', 'https://github.com/microsoft/Cream/tree/4a13c40/AutoFormerV2'
S3_README = 'https://github.com/microsoft/Cream/blob/4a13c40/AutoFormerV2/README.md'


def _github(file: str) -> Source:
    return Source(f'{FN_GITHUB}/{file}', 'github-release', 'official')


def _blob(path: str) -> Source:
    return Source(f'{FN_BLOB}/{path}', 'azure-blob', 'official')


def _hf_timm(model: str) -> Source:
    return Source(f'https://huggingface.co/timm/{model}/resolve/main/model.safetensors', 'hf-timm', 'timm')


def _hf_transformers(model: str) -> Source:
    return Source(f'https://huggingface.co/microsoft/{model}/resolve/main/pytorch_model.bin',
                  'hf-transformers', 'hf', license='Apache-2.0')


def _drive(file_id: str) -> Source:
    return Source(f'https://drive.google.com/file/d/{file_id}/view', 'google-drive', 'official', direct=False)


def _onedrive(link: str) -> Source:
    return Source(f'https://1drv.ms/u/s!{link}', 'onedrive', 'official', direct=False)


def _openmmlab(url: str, layout: str) -> Source:
    return Source(url, 'openmmlab', layout, license='Apache-2.0')


def _top1(value: float, where: str, dataset: str = 'ImageNet-1K', setting: str = '224x224') -> Metric:
    return Metric('classification', dataset, 'top-1', value, where, setting)


# ---- FocalNet ---------------------------------------------------------------------------------------
def _focalnet_in1k(arch: str, top1: float, hf_model: str) -> Checkpoint:
    file = f"focalnet_{arch.replace('-', '_')}.pth"
    return Checkpoint(
        name=f'focalnet-{arch}_in1k', backbone=f'focalnet-{arch}',
        sources=(_github(file), _blob(f'classification/{file}'),
                 _hf_timm(f"focalnet_{arch.replace('-', '_')}.ms_in1k"), _hf_transformers(hf_model)),
        task='classification', dataset='ImageNet-1K', license='MIT', paper=FN_PAPER, code=FN_CODE,
        metrics=(_top1(top1, FN_README),))


def _focalnet_in22k(arch: str, file: str, hosted_on_github: bool, resolution: int) -> Checkpoint:
    sources = ((_github(file),) if hosted_on_github else ()) + (
        _blob(f'classification/{file}'), _hf_timm(f"focalnet_{arch.replace('-', '_')}.ms_in22k"))
    return Checkpoint(
        name=f'focalnet-{arch}_in22k', backbone=f'focalnet-{arch}', sources=sources,
        task='classification', dataset='ImageNet-22K', license='MIT', paper=FN_PAPER, code=FN_CODE,
        notes=f'ImageNet-22K pretraining at {resolution}px, 21,842-class head (ignored when loading a '
              'backbone); no ImageNet-1K accuracy is published for it.')


def _focalnet_iso(arch: str, top1: float) -> Checkpoint:
    size = arch.split('-')[0]
    return Checkpoint(
        name=f'focalnet-{arch}_in1k', backbone=f'focalnet-{arch}',
        sources=(_blob(f'classification/focalnet_{size}_iso_16.pth'),),
        task='classification', dataset='ImageNet-1K', license='MIT', paper=FN_PAPER, code=FN_CODE,
        metrics=(_top1(top1, FN_README),),
        notes='Isotropic (patch 16, single stage); the released flags of iso models are not fully '
              'documented upstream.')


def _focalnet_maskrcnn(arch: str, schedule: str, box_ap: float, mask_ap: float) -> Checkpoint:
    file = f"focalnet_{arch.replace('-', '_')}_maskrcnn_{schedule}.pth"
    setting = f'Mask R-CNN {schedule}'
    return Checkpoint(
        name=f'focalnet-{arch}_maskrcnn-{schedule}-coco', backbone=f'focalnet-{arch}',
        sources=(_blob(f'detection/{file}'),), task='detection', dataset='COCO', license='MIT',
        paper=FN_PAPER, code=FN_CODE,
        metrics=(Metric('detection', 'COCO val2017', 'box AP', box_ap, FN_README, setting),
                 Metric('instance segmentation', 'COCO val2017', 'mask AP', mask_ap, FN_README, setting)),
        arch_overrides=(('focal_windows', (9, 9, 9, 9)),),
        notes='Full Mask R-CNN checkpoint (mmdet 2.x); the backbone is selected by its `backbone.` prefix.')


def _focalnet_det3x(detector: str, tag: str, file_stem: str, box_ap: float) -> Checkpoint:
    return Checkpoint(
        name=f'focalnet-tiny-lrf_{tag}-3x-coco', backbone='focalnet-tiny-lrf',
        sources=(_blob(f'detection/focalnet_tiny_lrf_{file_stem}_3x.pth'),),
        task='detection', dataset='COCO', license='MIT', paper=FN_PAPER, code=FN_CODE,
        metrics=(Metric('detection', 'COCO val2017', 'box AP', box_ap, FN_README, f'{detector} 3x'),),
        arch_overrides=(('focal_windows', (11, 9, 9, 7)),),
        notes='Full detector checkpoint (mmdet 2.x); the backbone is selected by its `backbone.` prefix.')


def _focalnet_upernet(arch: str, miou: float, miou_ms: float) -> Checkpoint:
    setting = 'UperNet 160k, 512x512'
    return Checkpoint(
        name=f'focalnet-{arch}_upernet-ade20k', backbone=f'focalnet-{arch}',
        sources=(_blob(f"segmentation/focalnet_{arch.replace('-', '_')}_upernet_160k.pth"),),
        task='segmentation', dataset='ADE20K', license='MIT', paper=FN_PAPER, code=FN_CODE,
        metrics=(Metric('segmentation', 'ADE20K val', 'mIoU', miou, FN_README, setting),
                 Metric('segmentation', 'ADE20K val', 'mIoU (ms)', miou_ms, FN_README, setting)),
        arch_overrides=(('focal_windows', (9, 9, 9, 9)),),
        notes='Full UperNet checkpoint (mmseg 0.x); the backbone is selected by its `backbone.` prefix.')


# ---- Twins ------------------------------------------------------------------------------------------
_TWINS_OFFICIAL = {  # official file stem → Google Drive ids (ImageNet, ADE20K UperNet) from the README
    'pcpvt_small': ('1TWIx_8M-4y6UOKtbCgm1v-UVQ-_lYe6X', '1PkkBULZZUhIkFKq_D9db1DXUIHwIPlvp'),
    'pcpvt_base': ('1BsD3ZRivvPsHoZB1AX-tbirFLtCln8ky', '16sCd0slLLz6xt3C2ma3TkS9rpMS9eezT'),
    'pcpvt_large': ('17xZXOWEcSGs0quBmMEkBYCxjPRYH-L45', '1wsU9riWBiN22fyfsJCHDFhLyP2c_n8sk'),
    'alt_gvt_small': ('131SVOphM_-SaBytf4kWjo3ony5hpOt4S', '18OhG0sbAJ5okPj0zn-8YTydKG9jS8TUx'),
    'alt_gvt_base': ('1s83To8xgDWY6Ad8VBP3Nx9gqY709rrGu', '1LNtdvACihmKO6XyBPoJDxbrd6AuHVVvq'),
    'alt_gvt_large': ('1um39wxIaicmOquP2fr_SiZdxNCUou8w-', '1xS91hytfzuMZ5Rgb-W-cOJ9G7ptjVwlO'),
}


def _twins_stem(kind: str, size: str) -> str:
    return f"{'pcpvt' if kind == 'pcpvt' else 'alt_gvt'}_{size}"


def _twins_in1k(kind: str, size: str, top1: float, mmseg_file: str) -> Checkpoint:
    stem = _twins_stem(kind, size)
    return Checkpoint(
        name=f'twins-{kind}-{size}_in1k', backbone=f'twins-{kind}-{size}',
        sources=(_drive(_TWINS_OFFICIAL[stem][0]), _hf_timm(f'twins_{kind}_{size}.in1k'),
                 _openmmlab(f'{MMSEG_TWINS_PRE}/{mmseg_file}', 'mmseg')),
        task='classification', dataset='ImageNet-1K', license='Apache-2.0', paper=TW_PAPER, code=TW_CODE,
        metrics=(_top1(top1, TW_README),),
        notes='The official file is on Google Drive (manual download); timm\'s copy has the official keys; '
              'mmseg\'s copy is converted to the mmseg layout.')


def _twins_upernet_official(kind: str, size: str, miou: float, miou_ms: float) -> Checkpoint:
    stem = _twins_stem(kind, size)
    setting = 'UperNet 160k, 512x512 (official)'
    return Checkpoint(
        name=f'twins-{kind}-{size}_upernet-ade20k-official', backbone=f'twins-{kind}-{size}',
        sources=(_drive(_TWINS_OFFICIAL[stem][1]),), task='segmentation', dataset='ADE20K',
        license='Apache-2.0', paper=TW_PAPER, code=TW_CODE,
        metrics=(Metric('segmentation', 'ADE20K val', 'mIoU', miou, TW_README, setting),
                 Metric('segmentation', 'ADE20K val', 'mIoU (ms)', miou_ms, TW_README, setting)),
        notes='Official mmseg-0.12 UperNet checkpoint (official backbone keys under `backbone.`).')


def _twins_mmseg(kind: str, size: str, head: str, run: str, miou: float, miou_ms: float) -> Checkpoint:
    tag, schedule = ('upernet', '160k') if head.startswith('uperhead') else ('fpn', '80k')
    folder = run.rsplit('_', 2)[0]  # the run name without its date, time and hash
    setting = f"{'UperNet' if tag == 'upernet' else 'Semantic FPN'} {schedule}, 512x512 (mmseg re-training)"
    return Checkpoint(
        name=f'twins-{kind}-{size}_{tag}-ade20k', backbone=f'twins-{kind}-{size}',
        sources=(_openmmlab(f'{MMSEG_TWINS}/{folder}/{run}.pth', 'mmseg'),), task='segmentation',
        dataset='ADE20K', license='Apache-2.0', paper=TW_PAPER, code=TW_CODE,
        metrics=(Metric('segmentation', 'ADE20K val', 'mIoU', miou, MMSEG_TWINS_META, setting),
                 Metric('segmentation', 'ADE20K val', 'mIoU (ms+flip)', miou_ms, MMSEG_TWINS_META, setting)),
        notes='Full mmseg segmentor checkpoint; the backbone is selected by its `backbone.` prefix.')


# ---- HRFormer ---------------------------------------------------------------------------------------
def _hrformer_in1k(size: str, top1: float, onedrive: str, mmpose_file: Optional[str]) -> Checkpoint:
    sources = (_onedrive(onedrive),)
    if mmpose_file:
        sources += (_openmmlab(f'{MMPOSE}/pretrain_models/{mmpose_file}', 'mmpose'),)
    return Checkpoint(
        name=f'hrformer-{size}_in1k', backbone=f'hrformer-{size}', sources=sources,
        task='classification', dataset='ImageNet-1K', license='MIT', paper=HR_PAPER, code=HR_CODE,
        metrics=(_top1(top1, HR_README),),
        notes='The official file is on OneDrive (manual download)' + (
            "; mmpose's copy is converted to the mmpose 1.x layout." if mmpose_file else '.'))


def _hrformer_coco(size: str, res: str, file: str, ap: float) -> Checkpoint:
    return Checkpoint(
        name=f'hrformer-{size}_coco-{res}', backbone=f'hrformer-{size}',
        sources=(_openmmlab(f'{MMPOSE}/top_down/hrformer/{file}', 'mmpose'),), task='pose',
        dataset='COCO', license='MIT', paper=HR_PAPER, code=HR_CODE,
        metrics=(Metric('pose', 'COCO val2017', 'AP', ap, MMPOSE_HR_META,
                        f'top-down heatmap {res}, flip test (mmpose re-training)'),),
        notes='Full mmpose top-down checkpoint; the backbone is selected by its `backbone.` prefix.')


def _hrformer_coco_official(size: str, res: str, onedrive: str, ap: float) -> Checkpoint:
    return Checkpoint(
        name=f'hrformer-{size}_coco-{res}-official', backbone=f'hrformer-{size}',
        sources=(_onedrive(onedrive),), task='pose', dataset='COCO', license='MIT', paper=HR_PAPER,
        code=HR_CODE,
        metrics=(Metric('pose', 'COCO val2017', 'AP', ap, HR_README,
                        f'top-down {res}, flip test, person detector AP 56.4 (official)'),),
        notes='Official mmpose-0.x-fork checkpoint (OneDrive, manual download); `backbone.` prefix.')


def _hrformer_seg(backbone: str, dataset: str, tag: str, onedrive: str, miou: float,
                  miou_ms: float, setting: str) -> Checkpoint:
    return Checkpoint(
        name=f'{backbone}_ocrnet-{tag}-official', backbone=backbone, sources=(_onedrive(onedrive),),
        task='segmentation', dataset=dataset, license='MIT', paper=HR_PAPER, code=HR_CODE,
        metrics=(Metric('segmentation', dataset, 'mIoU', miou, HR_README, setting),
                 Metric('segmentation', dataset, 'mIoU (ms)', miou_ms, HR_README, setting)),
        notes='Official openseg.pytorch OCRNet checkpoint (OneDrive, manual download).')


# ---- S3 (AutoFormerV2) -------------------------------------------------------------------------------
def _s3_in1k(size: str, letter: str, top1: float, timm_file: str) -> Checkpoint:
    return Checkpoint(
        name=f's3-{size}_in1k', backbone=f's3-{size}',
        sources=(Source(f'{S3_GITHUB}/S3-{letter}.pth', 'github-release', 'official'),
                 Source(f'{TIMM_GITHUB}/{timm_file}', 'github-release', 'official'),
                 _hf_timm(f'swin_s3_{size}_224.ms_in1k')),
        task='classification', dataset='ImageNet-1K', license='MIT', paper=S3_PAPER, code=S3_CODE,
        metrics=(_top1(top1, S3_README),),
        notes="Official release file ({'model': state_dict} with its buffers); timm's GitHub copy is the same "
              "file (its name carries torch.hub's sha256 prefix, checked by neither timm nor us); the HF hub "
              'copy is in the timm layout (PatchMerging at the start of the next stage, `head.fc`). The '
              'authors released no detection or segmentation weights.')


# ---- THE TABLE ----------------------------------------------------------------------------------------
CHECKPOINTS: tuple[Checkpoint, ...] = (
    # FocalNet, ImageNet-1K (README top-1)
    _focalnet_in1k('tiny-srf', 82.1, 'focalnet-tiny'),
    _focalnet_in1k('tiny-lrf', 82.3, 'focalnet-tiny-lrf'),
    _focalnet_in1k('small-srf', 83.4, 'focalnet-small'),
    _focalnet_in1k('small-lrf', 83.5, 'focalnet-small-lrf'),
    _focalnet_in1k('base-srf', 83.7, 'focalnet-base'),
    _focalnet_in1k('base-lrf', 83.9, 'focalnet-base-lrf'),
    _focalnet_iso('tiny-iso', 74.1),
    _focalnet_iso('small-iso', 80.9),
    _focalnet_iso('base-iso', 82.4),
    # FocalNet, ImageNet-22K
    _focalnet_in22k('large-fl3', 'focalnet_large_lrf_384.pth', True, 384),
    _focalnet_in22k('large-fl4', 'focalnet_large_lrf_384_fl4.pth', True, 384),
    _focalnet_in22k('xlarge-fl3', 'focalnet_xlarge_lrf_384.pth', True, 384),
    _focalnet_in22k('xlarge-fl4', 'focalnet_xlarge_lrf_384_fl4.pth', True, 384),
    _focalnet_in22k('huge-fl3', 'focalnet_huge_lrf_224.pth', False, 224),
    _focalnet_in22k('huge-fl4', 'focalnet_huge_lrf_224_fl4.pth', False, 224),
    # FocalNet, COCO Mask R-CNN (README)
    _focalnet_maskrcnn('tiny-srf', '1x', 45.9, 41.3), _focalnet_maskrcnn('tiny-srf', '3x', 47.6, 42.6),
    _focalnet_maskrcnn('tiny-lrf', '1x', 46.1, 41.5), _focalnet_maskrcnn('tiny-lrf', '3x', 48.0, 42.9),
    _focalnet_maskrcnn('small-srf', '1x', 48.0, 42.7), _focalnet_maskrcnn('small-srf', '3x', 48.9, 43.6),
    _focalnet_maskrcnn('small-lrf', '1x', 48.3, 43.1), _focalnet_maskrcnn('small-lrf', '3x', 49.3, 43.8),
    _focalnet_maskrcnn('base-srf', '1x', 48.8, 43.3), _focalnet_maskrcnn('base-srf', '3x', 49.6, 44.1),
    _focalnet_maskrcnn('base-lrf', '1x', 49.0, 43.5), _focalnet_maskrcnn('base-lrf', '3x', 49.8, 44.1),
    _focalnet_det3x('Cascade Mask R-CNN', 'cascade-maskrcnn', 'cascade_maskrcnn', 51.5),
    _focalnet_det3x('ATSS', 'atss', 'atss', 49.6),
    _focalnet_det3x('Sparse R-CNN', 'sparse-rcnn', 'sparsercnn', 49.9),
    # FocalNet, ADE20K UperNet 160k (README)
    _focalnet_upernet('tiny-srf', 46.5, 47.2), _focalnet_upernet('tiny-lrf', 46.8, 47.8),
    _focalnet_upernet('small-srf', 49.3, 50.1), _focalnet_upernet('small-lrf', 49.1, 50.1),
    _focalnet_upernet('base-srf', 50.2, 51.1), _focalnet_upernet('base-lrf', 50.5, 51.4),
    # Twins, ImageNet-1K (README top-1; mmseg converted copies)
    _twins_in1k('pcpvt', 'small', 81.2, 'pcpvt_small_20220308-e638c41c.pth'),
    _twins_in1k('pcpvt', 'base', 82.7, 'pcpvt_base_20220308-0621964c.pth'),
    _twins_in1k('pcpvt', 'large', 83.1, 'pcpvt_large_20220308-37579dc6.pth'),
    _twins_in1k('svt', 'small', 81.7, 'alt_gvt_small_20220308-7e1c3695.pth'),
    _twins_in1k('svt', 'base', 83.2, 'alt_gvt_base_20220308-1b7eb711.pth'),
    _twins_in1k('svt', 'large', 83.7, 'alt_gvt_large_20220308-fb5936f3.pth'),
    # Twins, ADE20K: official UperNet (Drive) and mmseg re-trainings (metafile)
    _twins_upernet_official('pcpvt', 'small', 46.2, 47.5),
    _twins_upernet_official('pcpvt', 'base', 47.1, 48.4),
    _twins_upernet_official('pcpvt', 'large', 48.6, 49.8),
    _twins_upernet_official('svt', 'small', 46.2, 47.1),
    _twins_upernet_official('svt', 'base', 47.4, 48.9),
    _twins_upernet_official('svt', 'large', 48.8, 50.2),
    _twins_mmseg('pcpvt', 'small', 'fpnhead', 'twins_pcpvt-s_fpn_fpnhead_8x4_512x512_80k_ade20k_20211201_204132-41acd132', 43.26, 44.11),
    _twins_mmseg('pcpvt', 'small', 'uperhead', 'twins_pcpvt-s_uperhead_8x4_512x512_160k_ade20k_20211201_233537-8e99c07a', 46.04, 46.92),
    _twins_mmseg('pcpvt', 'base', 'fpnhead', 'twins_pcpvt-b_fpn_fpnhead_8x4_512x512_80k_ade20k_20211130_141019-d396db72', 45.66, 46.48),
    _twins_mmseg('pcpvt', 'base', 'uperhead', 'twins_pcpvt-b_uperhead_8x2_512x512_160k_ade20k_20211130_141020-02094ea5', 47.91, 48.64),
    _twins_mmseg('pcpvt', 'large', 'fpnhead', 'twins_pcpvt-l_fpn_fpnhead_8x4_512x512_80k_ade20k_20211201_105226-bc6d61dc', 45.94, 46.70),
    _twins_mmseg('pcpvt', 'large', 'uperhead', 'twins_pcpvt-l_uperhead_8x2_512x512_160k_ade20k_20211201_075053-c6095c07', 49.35, 50.08),
    _twins_mmseg('svt', 'small', 'fpnhead', 'twins_svt-s_fpn_fpnhead_8x4_512x512_80k_ade20k_20211130_141006-0a0d3317', 44.47, 45.42),
    _twins_mmseg('svt', 'small', 'uperhead', 'twins_svt-s_uperhead_8x2_512x512_160k_ade20k_20211130_141005-e48a2d94', 46.08, 46.96),
    _twins_mmseg('svt', 'base', 'fpnhead', 'twins_svt-b_fpn_fpnhead_8x4_512x512_80k_ade20k_20211201_113849-88b2907c', 46.77, 47.47),
    _twins_mmseg('svt', 'base', 'uperhead', 'twins_svt-b_uperhead_8x2_512x512_160k_ade20k_20211202_040826-0943a1f1', 48.04, 48.87),
    _twins_mmseg('svt', 'large', 'fpnhead', 'twins_svt-l_fpn_fpnhead_8x4_512x512_80k_ade20k_20211130_141005-1d59bee2', 46.55, 47.74),
    _twins_mmseg('svt', 'large', 'uperhead', 'twins_svt-l_uperhead_8x2_512x512_160k_ade20k_20211130_141005-3e2cae61', 49.65, 50.63),
    # HRFormer, ImageNet-1K (README top-1; official on OneDrive, mmpose converted copies)
    _hrformer_in1k('tiny', 78.6, 'Ai-PFrdirDvwj1UXGB63dBVVOuLO?e=ZLOY7r', None),
    _hrformer_in1k('small', 81.2, 'Ai-PFrdirDvwj1cc3tSp4kIKI_JH?e=bHW7xj', 'hrformer_small-09516375_20220226.pth'),
    _hrformer_in1k('base', 82.8, 'Ai-PFrdirDvwj1iNZngTF7PEyik9?e=fv8CG6', 'hrformer_base-32815020_20220226.pth'),
    # HRFormer, COCO keypoints: mmpose re-trainings (direct) and official (OneDrive)
    _hrformer_coco('small', '256x192', 'hrformer_small_coco_256x192-5310d898_20220316.pth', 73.8),
    _hrformer_coco('small', '384x288', 'hrformer_small_coco_384x288-98d237ed_20220316.pth', 75.7),
    _hrformer_coco('base', '256x192', 'hrformer_base_coco_256x192-6f5f1169_20220316.pth', 75.4),
    _hrformer_coco('base', '384x288', 'hrformer_base_coco_384x288-ecf0758d_20220316.pth', 77.4),
    _hrformer_coco_official('small', '256x192', 'Ai-PFrdirDvwj2PC53KZd-7v3X0H?e=hUZ0fE', 74.0),
    _hrformer_coco_official('small', '384x288', 'Ai-PFrdirDvwj2TxlkzWYuh9CkvU?e=H50XSl', 75.6),
    _hrformer_coco_official('base', '256x192', 'Ai-PFrdirDvwj2V-4bLd_7RkjTFW?e=L20Wit', 75.6),
    _hrformer_coco_official('base', '384x288', 'Ai-PFrdirDvwj2ZKrF6rWWzoRJUM?e=RCRb0p', 77.2),
    # HRFormer, segmentation (official OCRNet, openseg.pytorch)
    _hrformer_seg('hrformer-small', 'Cityscapes val', 'cityscapes', 'Ai-PFrdirDvwj3Wsg-_ApKUAEUft?e=BnhLal', 80.0, 81.0, 'OCRNet 80k, 512x1024'),
    _hrformer_seg('hrformer-base', 'Cityscapes val', 'cityscapes', 'Ai-PFrdirDvwj3zEMdYLM8nZ5gXN?e=v7ehnB', 81.4, 82.0, 'OCRNet 80k, 512x1024'),
    _hrformer_seg('hrformer-base-win15', 'Cityscapes val', 'cityscapes', 'Ai-PFrdirDvwkAp3LjwI-7Csmh0K?e=K1zXrn', 81.9, 82.6, 'OCRNet 80k, 512x1024'),
    _hrformer_seg('hrformer-small', 'PASCAL-Context val', 'pascal-context', 'Ai-PFrdirDvwkADkevlhIuUrPC1T?e=hcDx5S', 53.8, 54.6, 'OCRNet 60k, 520x520'),
    _hrformer_seg('hrformer-base', 'PASCAL-Context val', 'pascal-context', 'Ai-PFrdirDvwkAMUzRnCGmAxEehJ?e=HrCQ9c', 56.3, 57.1, 'OCRNet 60k, 520x520'),
    _hrformer_seg('hrformer-base-win15', 'PASCAL-Context val', 'pascal-context', 'Ai-PFrdirDvwkAIBAkrOlPp_T1YT?e=DeHMdo', 57.6, 58.5, 'OCRNet 60k, 520x520'),
    _hrformer_seg('hrformer-small', 'COCO-Stuff val', 'coco-stuff', 'Ai-PFrdirDvwj3tbt5BhdCrsu6lK?e=up2HUI', 37.9, 38.9, 'OCRNet 60k, 520x520'),
    _hrformer_seg('hrformer-base', 'COCO-Stuff val', 'coco-stuff', 'Ai-PFrdirDvwkAFAYKZm2wL9C6KL?e=AZiXLK', 41.6, 42.5, 'OCRNet 60k, 520x520'),
    _hrformer_seg('hrformer-base-win15', 'COCO-Stuff val', 'coco-stuff', 'Ai-PFrdirDvwj37Np48Gpb-Pjowu?e=iwL5UA', 42.4, 43.3, 'OCRNet 60k, 520x520'),
    _hrformer_seg('hrformer-small', 'ADE20K val', 'ade20k', 'Ai-PFrdirDvwj28i74aN6_Zk4clX?e=CWGOcd', 44.0, 45.1, 'OCRNet 150k, 520x520'),
    _hrformer_seg('hrformer-base', 'ADE20K val', 'ade20k', 'Ai-PFrdirDvwj3epNJ-QFF33tZtr?e=df3fQk', 46.3, 47.6, 'OCRNet 150k, 520x520'),
    _hrformer_seg('hrformer-base-win13', 'ADE20K val', 'ade20k', 'Ai-PFrdirDvwj3oTs_gVPzFDjdyU?e=yjGRKz', 48.7, 50.0, 'OCRNet 150k, 520x520'),
    # S3 (AutoFormerV2), ImageNet-1K (README top-1)
    _s3_in1k('tiny', 'T', 82.1, 's3_t-1d53f6a8.pth'),
    _s3_in1k('small', 'S', 83.7, 's3_s-3bb4c69d.pth'),
    _s3_in1k('base', 'B', 84.0, 's3_b-a1e95db4.pth'),
)

DEFAULT_CHECKPOINTS: dict[str, str] = {
    **{f'focalnet-{a}': f'focalnet-{a}_in1k' for a in (
        'tiny-srf', 'tiny-lrf', 'small-srf', 'small-lrf', 'base-srf', 'base-lrf',
        'tiny-iso', 'small-iso', 'base-iso')},
    **{f'focalnet-{a}': f'focalnet-{a}_in22k' for a in (
        'large-fl3', 'large-fl4', 'xlarge-fl3', 'xlarge-fl4', 'huge-fl3', 'huge-fl4')},
    **{f'twins-{k}-{s}': f'twins-{k}-{s}_in1k' for k in ('pcpvt', 'svt') for s in ('small', 'base', 'large')},
    'hrformer-tiny': 'hrformer-tiny_in1k',
    'hrformer-small': 'hrformer-small_in1k',
    'hrformer-base': 'hrformer-base_in1k',
    # the segmentation variants start from the window-7 ImageNet weights (tables resized on load),
    # exactly as the official segmentation code does
    'hrformer-base-win13': 'hrformer-base_in1k',
    'hrformer-base-win15': 'hrformer-base_in1k',
    **{f's3-{s}': f's3-{s}_in1k' for s in ('tiny', 'small', 'base')},
}
"""Backbone zoo name → the checkpoint `create_backbone(name, pretrained=True)` loads."""

_EXTRA: dict[str, Checkpoint] = {}


# ---- queries ----------------------------------------------------------------------------------------
def all_checkpoints() -> dict[str, Checkpoint]:
    """Every known checkpoint by name (the table plus any registered at run time)."""
    table = {c.name: c for c in CHECKPOINTS}
    table.update(_EXTRA)
    return table


def list_checkpoints(pattern: str = '', family: str = '') -> list[str]:
    """Checkpoint names containing `pattern`, optionally of one family ('focalnet', 'twins', 'hrformer')."""
    return sorted(n for n, c in all_checkpoints().items()
                  if pattern in n and (not family or c.family == family))


def get_checkpoint(name: str) -> Checkpoint:
    """The table entry of `name`; a KeyError suggests close names."""
    table = all_checkpoints()
    if name not in table:
        close = difflib.get_close_matches(name, list(table), n=5, cutoff=0.5)
        raise KeyError(f'unknown checkpoint {name!r}' + (f'; did you mean {close}?' if close else '')
                       + ' (`backbones list` shows them all)')
    return table[name]


def default_checkpoint(backbone: str) -> str:
    """The checkpoint `create_backbone(backbone, pretrained=True)` loads."""
    if backbone not in DEFAULT_CHECKPOINTS:
        raise KeyError(f'no default checkpoint for backbone {backbone!r}; backbones with one: '
                       f'{sorted(DEFAULT_CHECKPOINTS)}')
    return DEFAULT_CHECKPOINTS[backbone]


def checkpoints_for(backbone: str) -> list[Checkpoint]:
    """Every checkpoint whose weights fit `backbone` (its own, plus its default if borrowed)."""
    own = [c for c in all_checkpoints().values() if c.backbone == backbone]
    default = DEFAULT_CHECKPOINTS.get(backbone)
    if default and all(c.name != default for c in own):
        own.insert(0, get_checkpoint(default))
    return own


def register_checkpoint(checkpoint: Checkpoint, *, replace: bool = False) -> Checkpoint:
    """Add a checkpoint at run time (your own trained weights, a test server, a private mirror)."""
    if checkpoint.name in all_checkpoints() and not replace:
        raise KeyError(f'checkpoint {checkpoint.name!r} already exists; pass replace=True')
    _EXTRA[checkpoint.name] = checkpoint
    return checkpoint


def unregister_checkpoint(name: str) -> None:
    _EXTRA.pop(name, None)
