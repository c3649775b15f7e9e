"""Budgeted search over slimmable supernets (backbones.search) and the sub-networks it searches
(per-group widths, dropped trailing blocks: backbones.slimming)."""
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import backbones
from backbones import search, slimming
from backbones._base import BACKBONE_CLASSES, InvalidArgumentError


@pytest.fixture(autouse=True)
def _restore_default_scope():
    """Models built here set mmengine's global default scope (mmpose for the pose demo); later test files
    build models of other libraries and must not inherit it."""
    from mmengine.registry import DefaultScope
    saved = dict(DefaultScope._instance_dict)
    yield
    DefaultScope._instance_dict = saved

REPO = Path(__file__).resolve().parents[1]
FAMILIES = [('FocalNet', 'tiny-srf'), ('S3', 'tiny'), ('SVT', 'small'), ('PCPVT', 'small'), ('HRFormer', 'small')]
WIDTHS = [0.25, 0.5, 0.75, 1.0]


def build(name: str, arch: str, seed: int = 0, **kwargs) -> backbones.DenseBackbone:
    cls = BACKBONE_CLASSES[name]
    torch.manual_seed(seed)
    return cls(arch=cls.micro_arch(arch), drop_path_rate=0.0, **kwargs).eval()


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


@pytest.mark.parametrize('name,arch', FAMILIES, ids=[f[0] for f in FAMILIES])
def test_per_group_widths_and_dropped_blocks_export_exactly(name, arch):
    """A sub-network with its own width per stage / branch and fewer blocks per stage: the natively narrow
    export computes exactly what the supernet computes at that sub-network (odd input size)."""
    model = build(name, arch, slimmable=dict(widths=WIDTHS))
    for m in model.modules():      # per-width BN statistics that differ from the full width's
        if hasattr(m, 'slim_running_mean'):
            m.slim_running_mean.normal_(0, 0.1, generator=torch.Generator().manual_seed(2))
            m.slim_running_var.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(3))
    groups, depths = backbones.width_groups(model), backbones.depth_stages(model)
    assert len(groups) >= 4 and (depths or name == 'HRFormer')
    x = torch.randn(1, 3, 70, 90, generator=torch.Generator().manual_seed(1))
    rng = random.Random(name)
    for _ in range(2):
        widths = [rng.choice(WIDTHS) for _ in groups]
        kept = [rng.randint(1, d) for d in depths] or None
        with torch.no_grad(), backbones.at_width(model, widths, kept):
            expected = model(x)
            assert backbones.get_width(model) in (widths[0], dict(zip(groups, widths)))
        narrow = backbones.export_width(model, widths, kept).eval()
        with torch.no_grad():
            got = slimming.pad_to_full(narrow(x), backbones.channel_map(model, widths))
        assert max(relative(a, b) for a, b in zip(got, expected)) < 1e-5, (widths, kept)
        if kept:
            assert [len(b) for _, _, b in model._slim_state.plan.depth_stages] == depths   # blocks restored
    with torch.no_grad():      # back at width 1 with every block: the ordinary backbone
        assert backbones.get_depths(model) is None and backbones.get_width(model) == 1.0


def test_a_stage_at_full_width_keeps_its_own_statistics_and_front_channels():
    """Per-group Isolated Activation and BN rows: a group at width 1 uses its first channels and the full
    BN statistics, a group at an intermediate width its last channels and that width's row."""
    model = build('HRFormer', 'small', slimmable=dict(widths=WIDTHS))
    groups = backbones.width_groups(model)
    widths = {g: (0.5 if g == 'b0' else 1.0) for g in groups}
    narrow = backbones.export_width(model, widths)
    full_b1 = model.stage2[0].branches[1][0].norm1.weight
    assert torch.equal(narrow.stage2[0].branches[1][0].norm1.weight, full_b1)
    w0 = model.stage2[0].branches[0][0].norm1.weight
    c = narrow.stage2[0].branches[0][0].norm1.weight.numel()
    assert c < w0.numel() and torch.equal(narrow.stage2[0].branches[0][0].norm1.weight, w0[-c:])


def test_tied_groups_take_one_ratio():
    """HRFormer's stem and stage-1 planes are tied (their shortcut projection must exist at every width):
    one width group, and a sub-network that sets them apart is refused."""
    model = build('HRFormer', 'small', slimmable=dict(widths=WIDTHS))
    assert backbones.width_groups(model) == ['p', 'b0', 'b1', 'b2', 'b3']
    with pytest.raises(InvalidArgumentError, match='tied'):
        backbones.set_width(model, {'p': 0.25, 'stem': 1.0})
    for widths in ([0.5, 1.0, 1.0, 1.0, 1.0], [1.0, 0.25, 0.5, 0.75, 1.0]):    # stem follows p
        narrow = backbones.export_width(model, widths)
        assert narrow.conv1.out_channels == round(widths[0] * model.conv1.out_channels)
    # stage 1's output (4 x 2 planes) equals branch 0's 8 channels: the narrow HRFormer would have no
    # transition convolution there, the slice has one; refused by name (the search skips such candidates)
    with pytest.raises(slimming.NotExportableError, match='transition1.0.0.weight'):
        backbones.export_width(model, [0.25, 1.0, 1.0, 1.0, 1.0])


def test_bad_sub_networks_are_refused_with_the_valid_choices():
    model = build('S3', 'tiny', slimmable=dict(widths=WIDTHS))
    for width, depths, needle in (({'s9': 0.5}, None, 'unknown groups'), ([0.5, 0.5], None, 'one ratio per width group'),
                                  ([0.5, 0.5, 0.3, 0.5], None, 'trained widths'), (0.5, [1, 1, 0, 1], '1 ≤ d'),
                                  (0.5, [3, 1, 1, 1], '1 ≤ d'), (0.5, [1, 1], 'one block count per stage')):
        with pytest.raises(InvalidArgumentError, match=needle):
            backbones.set_width(model, width, depths)
    hr = build('HRFormer', 'small', slimmable=dict(widths=WIDTHS))
    with pytest.raises(InvalidArgumentError, match='no droppable blocks'):
        backbones.set_width(hr, 0.5, [1, 1, 1])


def test_rank_dimension_of_a_lowrank_supernet():
    """A supernet with low-rank layers has a rank ratio dimension per stage: the --ranks values up to the
    stage's built ratio (only the built one by default); --ranks without low-rank layers is refused."""
    model = build('S3', 'tiny', slimmable=dict(widths=WIDTHS), lowrank=dict(ratio=[1.0, 1.0, 0.5, 0.5]))
    assert search.SearchSpace.of(model).ranks == [[1.0], [1.0], [0.5], [0.5]]
    space = search.SearchSpace.of(model, ranks=[1.0, 0.25, 0.5])
    assert space.ranks == [[0.25, 0.5, 1.0], [0.25, 0.5, 1.0], [0.25, 0.5], [0.25, 0.5]]
    assert [name for name, _ in space.dimensions][-4:] == ['rank[0]', 'rank[1]', 'rank[2]', 'rank[3]']
    assert space.uniform(0.5).ranks == (1.0, 1.0, 0.5, 0.5) and space.uniform(0.5, rank=0.25).ranks == (0.25,) * 4
    rng = random.Random(0)
    for _ in range(10):
        c = space.crossover(space.sample(rng), space.mutate(space.sample(rng), rng, 0.5), rng)
        assert space.contains(c) and search.Candidate.from_dict(json.loads(json.dumps(c.as_dict()))) == c
        assert '|r' in c.key
    assert search.SearchSpace.from_dict(json.loads(json.dumps(space.as_dict()))) == space
    errors = [(name, {v: (0.0 if v != values[0] else 1.0) for v in values}) for name, values in space.dimensions]
    assert search.narrow_space(space, errors).ranks == [[0.5, 1.0], [0.5, 1.0], [0.25, 0.5], [0.25, 0.5]]
    with pytest.raises(InvalidArgumentError, match='--ranks'):
        search.SearchSpace.of(build('S3', 'tiny', slimmable=dict(widths=WIDTHS)), ranks=[0.5])
    with pytest.raises(InvalidArgumentError, match='none for stage'):
        search.SearchSpace.of(model, ranks=[0.75])
    from backbones.cli import build_parser
    args = build_parser().parse_args(['search', 'c.py', 'k.pth', '--budget', 'params=1M', '--ranks', '1', '0.5'])
    assert args.ranks == [1.0, 0.5]


def test_search_over_ranks_stays_within_budget_and_is_deterministic(tmp_path):
    """Evolution over widths, depths and rank ratios: never an over-budget candidate (the cost is the exported
    low-rank network's), the same records for a seed, ranks in the log and the resumable state."""
    model = build('S3', 'tiny', slimmable=dict(widths=WIDTHS), lowrank=dict(ratio=1.0))
    budget = search.Budget('params', 0.2 * sum(p.numel() for p in model.parameters()))
    score = feature_score(model)

    def run(name):
        space = search.SearchSpace.of(model, ranks=[1.0, 0.5, 0.25])
        return search.evolve(space, score, search.CostModel(model, (64, 64)), [budget], population=6,
                             generations=2, mutations=3, crossovers=3, parents=3, seed=5,
                             state_file=tmp_path / name, log_file=tmp_path / (name + '.jsonl'))
    first, again = run('a.json'), run('b.json')
    assert [(r['key'], r['score']) for r in first.records] == [(r['key'], r['score']) for r in again.records]
    assert first.rejected > 0 and any(min(r['candidate']['ranks']) < 1 for r in first.records)
    for r in first.records:
        c = search.Candidate.from_dict(r['candidate'])
        narrow = c.export(model)
        assert narrow.lowrank_cfg['ratio'] == list(c.ranks)
        assert r['costs']['params'] == sum(p.numel() for p in narrow.parameters()) <= budget.limit
    state = json.loads((tmp_path / 'a.json').read_text())
    assert state['settings']['space']['ranks'] and all('ranks' in r['candidate'] for r in state['records'])
    assert json.loads((tmp_path / 'a.json.jsonl').read_text().splitlines()[0])['candidate']['ranks']
    resumed = run('a.json')            # the finished state: resumed, nothing rescored
    assert [r['key'] for r in resumed.records] == [r['key'] for r in first.records]


def test_budgets_parse_with_units_and_refuse_nonsense():
    assert search.parse_budget('latency=120ms') == search.Budget('latency', 120.0)
    assert search.parse_budget('latency=0.5s').limit == 500.0
    assert search.parse_budget('memory=256MB').limit == 256e6
    assert search.parse_budget('memory=1GiB').limit == 2 ** 30
    assert search.parse_budget('params=10M').limit == 10e6
    assert search.parse_budget('macs=2.5G').limit == 2.5e9
    relative = search.parse_budget('macs=0.4x')
    assert relative.relative and relative.resolve(1e9) == search.Budget('macs', 4e8)
    for bad in ('speed=3', 'latency=10MB', 'memory=-5MB', 'params', 'params=0', 'params=1.5x'):
        with pytest.raises(InvalidArgumentError):
            search.parse_budget(bad)


def feature_score(model: torch.nn.Module):
    """A deterministic stand-in for a validation metric: closeness of the sub-network's outputs to the
    full network's on a fixed image (higher is better)."""
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(x)

    def score(c: search.Candidate) -> float:
        with torch.no_grad():
            c.apply(model)
            try:
                out = model(x)
            finally:
                backbones.set_width(model, 1.0)
        return -sum(((a - b).pow(2).mean() / b.pow(2).mean()).item() for a, b in zip(out, full))
    return score


def small_search(model, score, budget, tmp_path, name='state.json', **kw):
    space = search.SearchSpace.of(model)
    costs = search.CostModel(model, (64, 64))
    return search.evolve(space, score, costs, [budget], population=6, generations=2, mutations=3, crossovers=3,
                         parents=3, seed=3, state_file=tmp_path / name, log_file=tmp_path / (name + '.jsonl'), **kw)


def test_evolution_is_deterministic_within_budget_and_resumes(tmp_path):
    model = build('S3', 'tiny', slimmable=dict(widths=WIDTHS))
    full_params = sum(p.numel() for p in model.parameters())
    budget = search.Budget('params', 0.5 * full_params)
    score = feature_score(model)
    first = small_search(model, score, budget, tmp_path, 'a.json')
    again = small_search(model, score, budget, tmp_path, 'b.json')
    assert [(r['key'], r['score']) for r in first.records] == [(r['key'], r['score']) for r in again.records]
    assert len(first.records) >= 6 and first.rejected > 0      # some drawn over budget, never scored
    for r in first.records:                                    # the stated cost is the exported network's
        narrow = search.Candidate.from_dict(r['candidate']).export(model)
        params = sum(p.numel() for p in narrow.parameters())
        assert r['costs']['params'] == params <= budget.limit
    assert first.best_score == max(r['score'] for r in first.records)
    lines = (tmp_path / 'a.json.jsonl').read_text().splitlines()
    assert [json.loads(line)['key'] for line in lines] == [r['key'] for r in first.records]

    calls = []

    def interrupted(c):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(c)
        return score(c)
    with pytest.raises(KeyboardInterrupt):
        small_search(model, interrupted, budget, tmp_path, 'c.json')
    resumed_calls = []
    resumed = small_search(model, lambda c: resumed_calls.append(c) or score(c), budget, tmp_path, 'c.json')
    assert [(r['key'], r['score']) for r in resumed.records] == [(r['key'], r['score']) for r in first.records]
    assert len(resumed_calls) == len(first.records) - 5        # the five scored before the interruption kept
    with pytest.raises(ValueError, match='other settings'):
        search.evolve(search.SearchSpace.of(model), score, search.CostModel(model, (64, 64)), [budget],
                      population=7, generations=2, state_file=tmp_path / 'c.json')


def test_latency_table_is_measured_once_per_candidate_and_machine(tmp_path, monkeypatch):
    model = build('FocalNet', 'tiny-srf', slimmable=dict(widths=WIDTHS))
    space = search.SearchSpace.of(model)
    c = space.uniform(0.5)
    table = tmp_path / 'latency.json'
    costs = search.CostModel(model, (64, 64), repeats=2, warmup=1, latency_table=table, name='micro')
    first = costs.cost(c, 'latency')
    assert first > 0 and table.exists()
    monkeypatch.setattr(search.CostModel, 'measure_latency', lambda *a, **k: pytest.fail('measured twice'))
    assert search.CostModel(model, (64, 64), latency_table=table, name='micro').cost(c, 'latency') == first
    memory = costs.cost(c, 'memory')
    assert memory > sum(p.numel() * 4 for p in c.export(model).parameters())      # weights + activations
    assert 0 < costs.cost(space.uniform(0.25), 'macs') < costs.cost(c, 'macs')


def test_batchnorm_recalibration_gives_the_sub_network_its_own_statistics():
    """Recalibrated statistics of a sub-network (per-width rows) are those a natively narrow model
    accumulates from the same batches; restoring brings the stored ones back."""
    model = build('HRFormer', 'small', slimmable=dict(widths=WIDTHS))
    widths = [0.5, 0.25, 1.0, 0.75, 0.5]
    batches = [torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    backbones.set_width(model, widths)
    saved = search.recalibrate_batchnorm(model, batches)
    backbones.set_width(model, 1.0)
    recalibrated = backbones.export_width(model, widths)
    reference = backbones.export_width(model, widths)
    search.recalibrate_batchnorm(reference, batches)
    for (name, a), (_, b) in zip(recalibrated.named_buffers(), reference.named_buffers()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-3), name   # float paths differ
    search.restore_batchnorm(model, saved)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert model.training is False


def test_input_size_is_a_dimension_with_its_own_costs():
    model = build('FocalNet', 'tiny-srf', slimmable=dict(widths=WIDTHS))
    space = search.SearchSpace.of(model, sizes=[(96, 96), (64, 64), (64, 80)])
    assert space.sizes == [(64, 64), (64, 80), (96, 96)] and space.dimensions[-1][0] == 'size'
    costs = search.CostModel(model, (128, 128))
    small, large = space.uniform(0.5, (64, 64)), space.uniform(0.5)
    assert large.size == (96, 96) and costs.cost(small, 'macs') < costs.cost(large, 'macs')
    rng = random.Random(0)
    for _ in range(20):
        c = space.mutate(space.sample(rng), rng, 0.5)
        assert space.contains(c) and search.Candidate.from_dict(json.loads(json.dumps(c.as_dict()))) == c


def test_test_pipelines_take_the_searched_size():
    det = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(128, 128), keep_ratio=True),
           dict(type='PackDetInputs')]
    assert search.with_test_size(det, (96, 112))[1] == dict(type='Resize', scale=(112, 96), keep_ratio=True)
    seg = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'), dict(type='PackSegInputs')]
    resized = search.with_test_size(seg, (64, 64))
    assert [step['type'] for step in resized] == ['LoadImageFromFile', 'Resize', 'LoadAnnotations', 'PackSegInputs']
    pose = [dict(type='LoadImage'), dict(type='TopdownAffine', input_size=(64, 64))]
    with pytest.raises(InvalidArgumentError, match='top-down pose'):
        search.with_test_size(pose, (48, 48))


def test_e_t_error_narrows_the_space_toward_better_values():
    space = search.SearchSpace(['s0', 's1'], [[0.25, 0.5, 0.75], [0.25, 0.5, 1.0]], [[1, 2]])
    records = []
    for w0 in (0.25, 0.5, 0.75):
        for w1 in (0.25, 0.5):
            for d in (1, 2):
                c = search.Candidate((w0, w1), (d,))
                records.append(dict(key=c.key, candidate=c.as_dict(), score=w0 + 0.1 * w1 + 0.01 * d))
    errors = dict(search.et_errors(records, space, reference=1.0, top_k=2))
    assert errors['width[s0]'][0.75] < errors['width[s0]'][0.25]
    assert errors['width[s1]'][1.0] is None                    # no candidate within budget holds it
    narrowed = search.narrow_space(space, list(errors.items()))
    assert narrowed.widths == [[0.5, 0.75], [0.25, 0.5]] and narrowed.depths == [[1, 2]]


def test_export_model_takes_the_searched_sub_network():
    """A detector-like model (backbone + FPN) exported at per-stage widths and fewer blocks: the exported
    network's neck outputs equal the supernet's at that sub-network."""
    from mmdet.models.necks import FPN
    model = build('S3', 'tiny', slimmable=dict(widths=WIDTHS))
    neck = FPN(in_channels=model.out_channels, out_channels=16, num_outs=4).eval()
    cfg = dict(backbone=dict(type='backbones.S3', arch=BACKBONE_CLASSES['S3'].micro_arch('tiny'), drop_path_rate=0.0,
                             slimmable=dict(widths=WIDTHS)),
               neck=dict(type='FPN', in_channels=list(model.out_channels), out_channels=16, num_outs=4))
    state = {f'backbone.{k}': v for k, v in model.state_dict().items()}
    state.update({f'neck.{k}': v for k, v in neck.state_dict().items()})
    widths, depths = [0.25, 1.0, 0.5, 0.75], [2, 1, 2, 1]
    new_cfg, new_state, narrow = slimming.export_model(cfg, state, widths, depths)
    assert new_cfg['backbone']['arch']['depths'] == depths
    new_neck = FPN(**{k: v for k, v in new_cfg['neck'].items() if k != 'type'}).eval()
    new_neck.load_state_dict({k[5:]: v for k, v in new_state.items() if k.startswith('neck.')})
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        with backbones.at_width(model, widths, depths):
            expected = neck(model(x))
        got = new_neck(narrow(x))
    assert max(relative(a, b) for a, b in zip(got, expected)) < 1e-5


def demo_supernet(tmp_path: Path, config_name: str, backbone_extra: str = ''):
    """Demo data under tmp_path/run and the Scala demo config's model (initialised, untrained: the search
    machinery is under test, not the metric) saved there as supernet.pth. `backbone_extra`: keyword
    arguments added to the backbone by a child config written there (e.g. "lowrank=dict(ratio=1.0)")."""
    import os
    from backbones.runner import build_model
    root = tmp_path / 'run'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    subprocess.run([sys.executable, str(REPO / 'tools' / 'make_demo_data.py'), '--out', str(root / 'data' / 'demo')],
                   cwd=tmp_path, check=True, capture_output=True, env=env)
    config = REPO / 'configs' / 'demo' / config_name
    if backbone_extra:
        child = root / ('lowrank_' + config_name)
        child.write_text(f"_base_ = {str(config)!r}\nmodel = dict(backbone=dict({backbone_extra}))\n")
        config = child
    model = build_model(str(config))
    model.init_weights()
    torch.save({'state_dict': model.state_dict()}, root / 'supernet.pth')
    return root, config, model, env


@pytest.mark.slow
def test_search_command_on_the_demo_pose_model(tmp_path):
    """`backbones search` end to end on the Scala demo pose model (HRFormer): report, log, plot, the winner
    within budget exported as a standalone model computing exactly the supernet slice (stored BN statistics:
    --bn-batches 0; recalibration is tested on its own); a rerun resumes."""
    root, config, model, env = demo_supernet(tmp_path, 'td-hm_hrformer-demo-scala_demo-shapes.py')
    full = sum(p.numel() for p in model.model.backbone.parameters())
    cmd = [sys.executable, '-m', 'backbones', 'search', str(config), 'supernet.pth', '--budget',
           'params=0.5x', '--population', '4', '--generations', '1', '--mutations', '2',
           '--crossovers', '2', '--parents', '2', '--bn-batches', '0', '--out', 'out', '--no-measure',
           '--latency-table', 'latency.json']
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = root / 'out'
    result = json.loads((out / 'result.json').read_text())
    assert result['metric'] == 'coco/AP' and result['costs']['params'] <= full * 0.5
    assert (out / 'report.md').read_text().count('| searched |') == 1 and (out / 'pareto.png').exists()
    scored = (out / 'candidates_round1.jsonl').read_text().splitlines()
    assert len(scored) >= 4
    from mmengine.config import Config
    winner_cfg = Config.fromfile(str(out / 'winner.py'))
    assert 'slimmable' not in winner_cfg.model['backbone']
    from backbones.runner import build_model
    exported = build_model(str(out / 'winner.py'))        # the standalone narrow model and its checkpoint
    exported.load_state_dict(torch.load(winner_cfg.load_from, weights_only=True)['state_dict'])
    supernet = model.model.eval()
    exported.eval()
    widths, depths = result['winner']['widths'], result['winner']['depths'] or None
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), backbones.at_width(supernet.backbone, widths, depths):
        expected = supernet.head(supernet.backbone(x))
    with torch.no_grad():
        got = exported.head(exported.backbone(x))
    assert relative(got, expected) < 1e-5
    rerun = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (out / 'candidates_round1.jsonl').read_text().splitlines() == scored     # resumed: nothing rescored


@pytest.mark.slow
def test_search_command_evolves_the_space_and_the_input_size(tmp_path):
    """`--evolve-space` with the input size searched (the demo segmenter): two rounds, the second's space
    narrowed; the winner's exported config resizes its test images to the winner's size."""
    root, config, model, env = demo_supernet(tmp_path, 'fpn_focalnet-demo-scala_demo-shapes.py')
    cmd = [sys.executable, '-m', 'backbones', 'search', str(config), 'supernet.pth', '--budget', 'macs=0.5x',
           '--widths', '0.25', '0.5', '0.75', '1', '--sizes', '96x96', '128x128', '--population', '4',
           '--generations', '1', '--mutations', '2', '--crossovers', '2', '--parents', '2', '--evolve-space',
           '--rounds', '2', '--out', 'out', '--no-measure', '--latency-table', 'latency.json']
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (root / 'out' / 'report.md').read_text()
    assert '## Round 2' in report and 'E-T error' in report and 'size ∈ {96x96, 128x128}' in report
    result = json.loads((root / 'out' / 'result.json').read_text())
    h, w = result['winner']['size']
    from mmengine.config import Config
    pipeline = Config.fromfile(str(root / 'out' / 'winner.py')).test_dataloader.dataset.pipeline
    assert dict(type='Resize', scale=(w, h), keep_ratio=True) in [dict(step) for step in pipeline]


@pytest.mark.slow
def test_search_command_with_ranks_exports_a_lowrank_winner(tmp_path):
    """`backbones search --ranks` on the Scala demo pose model with lowrank= beside slimmable=: the winner's
    config builds the low-rank narrow backbone with its rank ratios, its checkpoint loads as is, and the
    exported model computes exactly the supernet slice."""
    root, config, model, env = demo_supernet(tmp_path, 'td-hm_hrformer-demo-scala_demo-shapes.py',
                                             'lowrank=dict(ratio=1.0)')
    full = sum(p.numel() for p in model.model.backbone.parameters())
    cmd = [sys.executable, '-m', 'backbones', 'search', str(config), 'supernet.pth', '--budget', 'params=0.3x',
           '--ranks', '1.0', '0.5', '0.25', '--no-depth', '--population', '4', '--generations', '1',
           '--mutations', '2', '--crossovers', '2', '--parents', '2', '--bn-batches', '0', '--out', 'out',
           '--no-measure', '--latency-table', 'latency.json']
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = root / 'out'
    result = json.loads((out / 'result.json').read_text())
    ranks = result['winner']['ranks']
    assert len(ranks) == 4 and result['costs']['params'] <= full * 0.3
    assert '| ranks |' in (out / 'report.md').read_text()
    from mmengine.config import Config
    from backbones import load_pretrained
    from backbones.runner import build_model
    winner_cfg = Config.fromfile(str(out / 'winner.py'))
    assert winner_cfg.model['backbone']['lowrank'] == dict(ratio=ranks)
    exported = build_model(str(out / 'winner.py')).eval()
    state = torch.load(winner_cfg.load_from, weights_only=True)['state_dict']
    report = load_pretrained(exported.backbone, {'state_dict': {k[9:]: v for k, v in state.items()
                                                                if k.startswith('backbone.')}})
    assert not report.adapted
    exported.load_state_dict(state)
    supernet = model.model.eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), backbones.at_width(supernet.backbone, result['winner']['widths'], None, ranks):
        expected = supernet.head(supernet.backbone(x))
    with torch.no_grad():
        got = exported.head(exported.backbone(x))
    assert relative(got, expected) < 1e-5
