"""The checkpoint table: consistent names, sources, hashes, licences, metrics and defaults."""
from __future__ import annotations

import re
import urllib.parse

import pytest

from backbones import list_backbones, zoo
from backbones._factory import _zoo as backbone_table

TABLE = zoo.all_checkpoints()


def test_names_are_backbone_underscore_tag_and_unique():
    assert len(TABLE) == len(zoo.CHECKPOINTS)
    for entry in zoo.CHECKPOINTS:
        assert re.fullmatch(r'[a-z0-9-]+_[a-z0-9-]+', entry.name), entry.name
        assert entry.name == f'{entry.backbone}_{entry.tag}'


def test_every_checkpoint_names_a_real_backbone():
    known = set(list_backbones())
    assert {c.backbone for c in zoo.CHECKPOINTS} <= known, sorted({c.backbone for c in zoo.CHECKPOINTS} - known)


def test_every_backbone_has_a_default_checkpoint_of_a_compatible_variant():
    backbones = backbone_table()
    assert set(zoo.DEFAULT_CHECKPOINTS) == set(backbones)
    manual_only = {n for n in zoo.DEFAULT_CHECKPOINTS.values() if not zoo.get_checkpoint(n).direct_sources}
    assert manual_only == {'hrformer-tiny_in1k'}   # HRFormer-T exists only on OneDrive
    for backbone, name in zoo.DEFAULT_CHECKPOINTS.items():
        entry = zoo.get_checkpoint(name)
        assert backbones[entry.backbone][0] is backbones[backbone][0], (backbone, name)
        assert zoo.default_checkpoint(backbone) == name


def test_sources_are_well_formed():
    for entry in zoo.CHECKPOINTS:
        urls = [s.url for s in entry.sources]
        assert len(set(urls)) == len(urls), entry.name
        for source in entry.sources:
            parsed = urllib.parse.urlparse(source.url)
            assert parsed.scheme == 'https' and parsed.netloc, source.url
            assert source.layout in zoo.LAYOUTS
            if source.host == 'openmmlab':     # OpenMMLab publishes sha256[:8] in every file name
                assert source.name_hash and re.fullmatch(r'[0-9a-f]{8}', source.name_hash), source.url
            if source.host in ('google-drive', 'onedrive'):
                assert not source.direct        # web pages are never fetched automatically
            assert source.sha256 is None        # no upstream project publishes a full hash (never invent one)


def test_hash_status_is_reported_for_every_source():
    statuses = {s.hash_status for c in zoo.CHECKPOINTS for s in c.sources}
    assert statuses <= {'no hash published (trust on first use)', 'manual download, no hash'} | {
        s for s in statuses if s.startswith('sha256 prefix ')}


def test_licences_papers_and_metrics():
    for entry in zoo.CHECKPOINTS:
        assert entry.license in ('MIT', 'Apache-2.0'), entry.name
        assert entry.paper.startswith('https://arxiv.org/abs/')
        assert entry.task in ('classification', 'detection', 'segmentation', 'pose')
        for metric in entry.metrics:
            assert 0 < metric.value < 100 and metric.where.startswith('https://'), (entry.name, metric)
        if entry.dataset != 'ImageNet-22K':     # 22K checkpoints have no published accuracy
            assert entry.metrics, f'{entry.name}: a published metric and where it was published'


def test_arch_overrides_use_official_argument_names():
    backbones = backbone_table()
    for entry in zoo.CHECKPOINTS:
        cls, arch = backbones[entry.backbone]
        overrides = dict(entry.arch_overrides)
        assert set(overrides) <= set(cls.DEFAULTS), (entry.name, set(overrides) - set(cls.DEFAULTS))
        cls.resolve_arch({**cls.ARCHS[arch], **overrides})


def test_published_numbers_spot_checks():
    """A few numbers against research/models.md (§1.4, §2.4, §3.4) and seed_papers_2.md §4.3, to catch
    transcription slips."""
    def value(name, metric):
        return next(m.value for m in zoo.get_checkpoint(name).metrics if m.metric == metric)
    assert value('focalnet-base-lrf_maskrcnn-3x-coco', 'box AP') == 49.8
    assert value('focalnet-tiny-lrf_upernet-ade20k', 'mIoU (ms)') == 47.8
    assert value('twins-svt-large_upernet-ade20k', 'mIoU') == 49.65
    assert value('twins-pcpvt-small_upernet-ade20k-official', 'mIoU') == 46.2
    assert value('hrformer-base_coco-384x288', 'AP') == 77.4
    assert value('hrformer-base-win13_ocrnet-ade20k-official', 'mIoU') == 48.7
    assert value('s3-small_in1k', 'top-1') == 83.7 and value('s3-base_in1k', 'top-1') == 84.0


def test_queries_and_run_time_registration():
    assert 'twins-pcpvt-small_upernet-ade20k' in zoo.list_checkpoints('pcpvt-small')
    assert all(n.startswith('hrformer') for n in zoo.list_checkpoints(family='hrformer'))
    with pytest.raises(KeyError, match='did you mean'):
        zoo.get_checkpoint('twins-svt-smal_in1k')
    with pytest.raises(KeyError):
        zoo.default_checkpoint('resnet-50')
    assert zoo.checkpoints_for('hrformer-base-win13')[0].name == 'hrformer-base_in1k'
    entry = zoo.Checkpoint(name='test-x_mine', backbone='test-x', task='classification', dataset='mine',
                           license='MIT', paper='-', code='-',
                           sources=(zoo.Source('https://example.org/x.pth', 'test', 'ours'),))
    zoo.register_checkpoint(entry)
    try:
        with pytest.raises(KeyError, match='already exists'):
            zoo.register_checkpoint(entry)
        assert zoo.get_checkpoint('test-x_mine') is entry
    finally:
        zoo.unregister_checkpoint('test-x_mine')
    with pytest.raises(ValueError):
        zoo.Checkpoint(name='a_b', backbone='c', task='t', dataset='d', license='MIT', paper='-', code='-',
                       sources=(zoo.Source('https://e/x', 'test', 'ours'),))
    with pytest.raises(ValueError):
        zoo.Source('https://e/x', 'test', 'ours', sha256='abc')


@pytest.mark.slow
def test_committed_model_cards_equal_the_generator_output():
    """model_cards/<family>.md are generated (tools/gen_model_cards.py); a drift from the table fails."""
    import importlib.util
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location('gen_model_cards', repo / 'tools' / 'gen_model_cards.py')
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    for family in generator.FAMILIES:
        card = repo / 'model_cards' / f'{family}.md'
        assert card.exists(), f'{card} missing: run tools/gen_model_cards.py'
        assert card.read_text() == generator.render(family), f'{card} is stale: run tools/gen_model_cards.py'
    text = (repo / 'model_cards' / 'twins.md').read_text()
    for entry in zoo.CHECKPOINTS:   # every checkpoint, its sources and hash status appear on its card
        card = (repo / 'model_cards' / f'{entry.family}.md').read_text()
        assert f'`{entry.name}`' in card and all(s.url in card for s in entry.sources)
    assert 'sha256 prefix e638c41c in file name' in text


@pytest.mark.slow
def test_mmengine_flops_on_the_cards_cover_every_variant_and_remeasure():
    """The cards' mmengine column comes from model_cards/flops_mmengine.json; it lists every variant and a
    fresh FlopAnalyzer run of a small variant gives the recorded value."""
    pytest.importorskip('mmengine')
    import importlib.util
    from pathlib import Path
    from backbones._factory import _zoo
    repo = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location('gen_model_cards', repo / 'tools' / 'gen_model_cards.py')
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    table = generator.mmengine_table()
    assert set(table) == set(_zoo()), 'run tools/gen_model_cards.py --measure-mmengine'
    for name in ('twins-svt-small', 'focalnet-tiny-srf'):
        cls, arch = _zoo()[name]
        assert generator.measure_mmengine(cls, arch) == pytest.approx(table[name], abs=1e-4)
