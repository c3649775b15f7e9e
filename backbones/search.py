"""Budgeted architecture search over slimmable supernets (one-shot evolution of AutoFormer as S3 and
MCUFormer use it; S3's search-space evolution; facts from ../shared/research/seed_papers_2.md §3-4, no
code copied).

A backbone built with `slimmable=` (and trained with Scala, `backbones.ScalaModel`) is a weight-sharing
supernet: every sub-network — a trained width ratio per width group (`slimming.width_groups`: per stage,
per branch in HRFormer), a kept depth per stage where the family can drop trailing blocks
(`slimming.depth_stages`) and, when the backbone also has MCUFormer's low-rank layers (`lowrank=` beside
`slimmable=`), a rank ratio per stage (`slimming.rank_ratios`: each low-rank layer keeps its first
rank_for(ρ, active in, active out) SVD components) — runs with inherited weights (`slimming.set_width`)
and exports exactly (`slimming.export_width`, the export built with `lowrank=dict(ratio=[ρ per stage])`).
The input size can be one more dimension. This module searches that space:

    SearchSpace       the values each dimension may take; sample / mutate / crossover / narrow
    Budget            'latency=120ms' | 'memory=256MB' | 'params=10M' | 'macs=2G' (several may be combined)
    CostModel         a candidate's cost: parameters of the exported backbone (exact), MACs (torch's flop
                      counter on the exported backbone, at the search size), memory (the memory model,
                      `backbones.memory`: weights + input + predicted activation peak of the exported
                      backbone) and latency (measured: median of the exported backbone's forward, batch 1,
                      in this process, once per candidate and machine, kept in a latency table file)
    evolve()          population 50, 20 generations, 25 children by mutation and 25 by crossover of the
                      top 10 per generation; candidates over budget are rejected before they are scored;
                      resumable state file, one log line per scored candidate, deterministic for a seed
    et_errors()       S3's E-T error per dimension value: mean error (full supernet's score − score) of the
                      top-k scored candidates holding that value; `narrow_space()` drops the values no
                      candidate within budget reached and the worse end of each range
    ConfigScorer      a candidate's score: the config's validation metric with inherited weights (BatchNorm
                      statistics recalibrated on training batches per candidate where the backbone has BN)

`backbones search CONFIG CHECKPOINT --budget ...` (`main`) runs it on an mmdet / mmseg / mmpose model and
exports the winner as a standalone config + checkpoint (`slimming.export_model`). `--ranks 1.0 0.9 0.7 0.5`
gives the rank ratio values a stage may take (values above a stage's built ratio are dropped for it);
without it a low-rank supernet's ranks stay at the built ratios (a one-value dimension). The costs, the
report, the JSONL log, the resumable state and `--evolve-space` (one more dimension) all carry them.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import random
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import torch
from torch import nn

from . import slimming
from ._base import invalid_argument

__all__ = ['Candidate', 'SearchSpace', 'Budget', 'parse_budget', 'CostModel', 'SearchResult', 'evolve',
           'et_errors', 'narrow_space', 'uniform_within_budget', 'ConfigScorer', 'main']


# ---------------------------------------------------------------------------------------------------
# candidates and the space
# ---------------------------------------------------------------------------------------------------
Size = tuple[int, int]


def _shown(v: Any) -> str:
    return f'{v[0]}x{v[1]}' if isinstance(v, tuple) else f'{v:g}'


@dataclass(frozen=True)
class Candidate:
    """One sub-network: a width ratio per width group, a kept depth per depth stage (() if none), when
    the input size is searched the (H, W) it runs at (None: the config's), and with low-rank layers a
    rank ratio per stage (() : the built ratios)."""
    widths: tuple[float, ...]
    depths: tuple[int, ...] = ()
    size: Optional[Size] = None
    ranks: tuple[float, ...] = ()

    @property
    def key(self) -> str:
        return ('w' + ','.join(f'{w:g}' for w in self.widths)
                + ('|d' + ','.join(map(str, self.depths)) if self.depths else '')
                + ('|r' + ','.join(f'{r:g}' for r in self.ranks) if self.ranks else '')
                + (f'|s{self.size[0]}x{self.size[1]}' if self.size else ''))

    def values(self) -> tuple:
        """In the order of `SearchSpace.dimensions`: widths, depths, ranks, size."""
        return tuple(self.widths) + tuple(self.depths) + tuple(self.ranks) + ((self.size,) if self.size else ())

    def apply(self, backbone: nn.Module) -> None:
        """Run `backbone` (slimmable) as this sub-network."""
        slimming.set_width(backbone, list(self.widths), list(self.depths) if self.depths else None,
                           list(self.ranks) if self.ranks else None)

    def export(self, backbone: nn.Module) -> nn.Module:
        return slimming.export_width(backbone, list(self.widths), list(self.depths) if self.depths else None,
                                     list(self.ranks) if self.ranks else None)

    def as_dict(self) -> dict:
        d = dict(widths=list(self.widths), depths=list(self.depths), size=list(self.size) if self.size else None)
        if self.ranks:                      # absent without low-rank layers (older state files stay valid)
            d['ranks'] = list(self.ranks)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> 'Candidate':
        size = d.get('size')
        return cls(tuple(float(w) for w in d['widths']), tuple(int(x) for x in d.get('depths', ())),
                   (int(size[0]), int(size[1])) if size else None, tuple(float(r) for r in d.get('ranks') or ()))


@dataclass
class SearchSpace:
    """Allowed values per dimension: `widths[i]` for width group `groups[i]`, `depths[k]` for depth
    stage k (empty when the depth is not searched), `sizes` the input sizes (empty: not searched),
    `ranks[k]` the rank ratios of stage k's low-rank layers (empty: the backbone has none)."""
    groups: list[str]
    widths: list[list[float]]
    depths: list[list[int]] = field(default_factory=list)
    sizes: list[Size] = field(default_factory=list)
    ranks: list[list[float]] = field(default_factory=list)

    @classmethod
    def of(cls, backbone: nn.Module, widths: Optional[Sequence[float]] = None, depth: bool = True,
           min_depth: int = 1, sizes: Sequence[Size] = (), ranks: Optional[Sequence[float]] = None
           ) -> 'SearchSpace':
        """The space of a slimmable backbone: its trained widths (or `widths`, a subset) for every width
        group; with `depth`, every kept depth from `min_depth` (at most the stage's) to the full depth;
        `sizes`: input sizes to choose from (smallest area first). With low-rank layers (`lowrank=`), a
        rank dimension per stage: the values of `ranks` up to that stage's built ratio (which always fit
        the built rank), or only the built ratio when `ranks` is None. `ranks` without low-rank layers,
        or leaving a stage no value, is refused."""
        grid = slimming.trained_widths(backbone)
        values = grid if widths is None else [w for w in grid if any(abs(w - v) < 1e-9 for v in widths)]
        if widths is not None and len(values) != len(set(widths)):
            raise invalid_argument('SearchSpace', 'widths', list(widths), f'trained widths of the model {grid}')
        groups = slimming.width_groups(backbone)
        depths = ([list(range(min(min_depth, full), full + 1)) for full in slimming.depth_stages(backbone)]
                  if depth else [])
        ordered = sorted({(int(h), int(w)) for h, w in sizes}, key=lambda s: (s[0] * s[1], s))
        return cls(groups, [list(values) for _ in groups], depths, ordered,
                   slimming.rank_choices(backbone, ranks, 'search', '--ranks'))

    @property
    def dimensions(self) -> list[tuple[str, list]]:
        return ([(f'width[{g}]', v) for g, v in zip(self.groups, self.widths)]
                + [(f'depth[{k}]', v) for k, v in enumerate(self.depths)]
                + [(f'rank[{k}]', v) for k, v in enumerate(self.ranks)]
                + ([('size', self.sizes)] if self.sizes else []))

    def size(self) -> int:
        return math.prod(len(v) for _, v in self.dimensions)

    def make(self, values: Sequence) -> Candidate:
        n, m, q = len(self.widths), len(self.depths), len(self.ranks)
        size = tuple(values[n + m + q]) if self.sizes else None
        return Candidate(tuple(float(v) for v in values[:n]), tuple(int(v) for v in values[n:n + m]), size,
                         tuple(float(v) for v in values[n + m:n + m + q]))

    def contains(self, c: Candidate) -> bool:
        return len(c.values()) == len(self.dimensions) and all(
            any(v == a for a in allowed) for v, (_, allowed) in zip(c.values(), self.dimensions))

    def sample(self, rng: random.Random) -> Candidate:
        return self.make([rng.choice(v) for _, v in self.dimensions])

    def mutate(self, c: Candidate, rng: random.Random, prob: float = 0.2) -> Candidate:
        """Each dimension redrawn with probability `prob` (AutoFormer's m_prob)."""
        return self.make([rng.choice(allowed) if rng.random() < prob else v
                          for v, (_, allowed) in zip(c.values(), self.dimensions)])

    def crossover(self, a: Candidate, b: Candidate, rng: random.Random) -> Candidate:
        """Each dimension from one parent, chosen at random."""
        return self.make([rng.choice(pair) for pair in zip(a.values(), b.values())])

    def uniform(self, width: float, size: Optional[Size] = None, rank: Optional[float] = None) -> Candidate:
        """Every width group at `width`, every block kept, at `size` (default: the largest searched); each
        stage's rank ratio its largest value up to `rank` (None: its largest; its smallest if none is)."""
        sizes = [size or self.sizes[-1]] if self.sizes else []
        ranks = [max([r for r in v if rank is None or r <= rank + 1e-9] or [min(v)]) for v in self.ranks]
        return self.make([width] * len(self.widths) + [max(v) for v in self.depths] + ranks + sizes)

    def smallest(self) -> Candidate:
        """The smallest value of every dimension (sizes: the smallest area)."""
        return self.make([min(v) if name != 'size' else v[0] for name, v in self.dimensions])

    def as_dict(self) -> dict:
        d = dict(groups=self.groups, widths=self.widths, depths=self.depths, sizes=[list(s) for s in self.sizes])
        if self.ranks:                      # absent without low-rank layers (older state files stay valid)
            d['ranks'] = self.ranks
        return d

    @classmethod
    def from_dict(cls, d: dict) -> 'SearchSpace':
        return cls(list(d['groups']), [list(map(float, v)) for v in d['widths']],
                   [list(map(int, v)) for v in d.get('depths', [])], [tuple(s) for s in d.get('sizes', [])],
                   [list(map(float, v)) for v in d.get('ranks') or []])

    def describe(self) -> str:
        return '; '.join(f'{name} ∈ {{{", ".join(map(_shown, values))}}}' for name, values in self.dimensions)


# ---------------------------------------------------------------------------------------------------
# budgets and costs
# ---------------------------------------------------------------------------------------------------
_UNITS = {'latency': {'': 1.0, 'ms': 1.0, 's': 1000.0},
          'memory': {'': 1, 'b': 1, 'kb': 1000, 'mb': 1000 ** 2, 'gb': 1000 ** 3, 'kib': 2 ** 10,
                     'mib': 2 ** 20, 'gib': 2 ** 30},
          'params': {'': 1, 'k': 1e3, 'm': 1e6, 'g': 1e9},
          'macs': {'': 1, 'k': 1e3, 'm': 1e6, 'g': 1e9}}
_SHOWN = {'latency': 'ms', 'memory': 'bytes', 'params': 'parameters', 'macs': 'multiply-accumulates'}


@dataclass(frozen=True)
class Budget:
    """A limit on one cost: latency (ms), memory (bytes), params, macs; `relative`: a fraction of the full
    network's cost (`resolve` turns it into an absolute limit)."""
    kind: str
    limit: float
    relative: bool = False

    def __str__(self) -> str:
        return f'{self.kind}={self.limit:g}x' if self.relative else f'{self.kind}={_format_cost(self.kind, self.limit)}'

    def resolve(self, full_cost: float) -> 'Budget':
        return Budget(self.kind, self.limit * full_cost) if self.relative else self


def parse_budget(text: str) -> Budget:
    """'latency=120ms' | 'memory=256MB' (also KB/GB/MiB/...) | 'params=10M' | 'macs=2.5G', or a fraction of
    the full network's cost: 'macs=0.5x'."""
    match = re.fullmatch(r'\s*(\w+)\s*=\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([a-zA-Z]*)\s*', str(text))
    kinds = sorted(_UNITS)
    if not match or match.group(1) not in _UNITS:
        raise invalid_argument('search', '--budget', text, f'KIND=VALUE with KIND one of {kinds}, e.g. '
                               'latency=120ms, memory=256MB, params=10M, macs=2G')
    kind, value, unit = match.group(1), float(match.group(2)), match.group(3).lower()
    if unit == 'x':
        if not 0 < value <= 1:
            raise invalid_argument('search', '--budget', text, 'a fraction in (0, 1] of the full network\'s cost')
        return Budget(kind, value, relative=True)
    if unit not in _UNITS[kind]:
        raise invalid_argument('search', '--budget', text, f'a {kind} unit among {sorted(u for u in _UNITS[kind] if u)}')
    if value <= 0:
        raise invalid_argument('search', '--budget', text, 'a positive limit')
    return Budget(kind, value * _UNITS[kind][unit])


def _format_cost(kind: str, value: float) -> str:
    if kind == 'latency':
        return f'{value:.1f}ms'
    if kind == 'memory':
        return f'{value / 2 ** 20:.1f}MiB'
    return f'{value / 1e6:.3f}M'


def _machine_key(threads: int) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), cpu)
    except OSError:
        pass
    return f'{platform.node()}|{cpu}|{os.cpu_count()}cpu|{threads}threads|torch{torch.__version__}'


class CostModel:
    """Costs of candidates of one slimmable backbone at one input size (batch 1); cached per candidate.

    params: parameters of the exported backbone (exact). macs: its multiply-accumulates (torch's flop
    counter / 2) at `size`. memory: the memory model's weights + input + predicted activation peak of the
    exported backbone (`backbones.memory.report_of`; ±10 % of measurement where the memory issue measured
    it). latency: measured — the exported backbone's median forward time over `repeats` runs after
    `warmup`, with `threads` threads, in this process — once per candidate and machine; the table lives in
    `latency_table` (JSON, keyed by machine, size, threads and candidate) so a later search reuses it."""

    KINDS = ('params', 'macs', 'memory', 'latency')

    def __init__(self, backbone: nn.Module, size: tuple[int, int], threads: int = 1, repeats: int = 5,
                 warmup: int = 2, latency_table: Optional[str | Path] = None, name: str = 'backbone'):
        self.backbone = backbone
        self.size = tuple(size)
        self.threads = threads
        self.repeats = repeats
        self.warmup = warmup
        self.name = name
        self.table_path = Path(latency_table) if latency_table else None
        self._cache: dict[tuple[str, str], float] = {}
        self._last_export: tuple[Optional[str], Optional[nn.Module]] = (None, None)
        self._table: dict = {}
        if self.table_path and self.table_path.exists():
            self._table = json.loads(self.table_path.read_text())
        self._table_key = f'{_machine_key(threads)}|{name}|{self.size[0]}x{self.size[1]}'

    def cost(self, c: Candidate, kind: str) -> float:
        if kind not in self.KINDS:
            raise invalid_argument('CostModel.cost', 'kind', kind, f'one of {self.KINDS}')
        key = (c.key, kind)
        if key not in self._cache:
            if kind == 'latency':
                table = self._table.setdefault(self._table_key, {})
                if c.key not in table:
                    table[c.key] = self.measure_latency(c)
                    self._save_table()
                self._cache[key] = table[c.key]
            else:
                self._cache[key] = getattr(self, f'_{kind}')(c)
        return self._cache[key]

    def costs(self, c: Candidate, kinds: Iterable[str]) -> dict[str, float]:
        return {k: self.cost(c, k) for k in kinds}

    def within(self, c: Candidate, budgets: Sequence[Budget]) -> bool:
        return all(self.cost(c, b.kind) <= b.limit for b in budgets)

    def _narrow(self, c: Candidate) -> nn.Module:
        """The exported network of `c`, built once for all the cost kinds asked of it in a row."""
        if self._last_export[0] != c.key:
            self._last_export = (c.key, c.export(self.backbone).eval())
        return self._last_export[1]

    def _params(self, c: Candidate) -> float:
        return float(sum(p.numel() for p in self._narrow(c).parameters()))

    def _size(self, c: Candidate) -> tuple[int, int]:
        return tuple(c.size) if c.size else self.size

    def _input(self, c: Candidate) -> torch.Tensor:
        return torch.randn(1, 3, *self._size(c), generator=torch.Generator().manual_seed(0))

    def _macs(self, c: Candidate) -> float:
        from torch.utils.flop_counter import FlopCounterMode
        narrow = self._narrow(c)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            narrow(self._input(c))
        return counter.get_total_flops() / 2

    def _memory(self, c: Candidate) -> float:
        from .memory import report_of
        report = report_of(self._narrow(c), self.name, self._size(c))
        return float(report.predicted_total_bytes)

    def measure_latency(self, c: Candidate, repeats: Optional[int] = None) -> float:
        narrow = self._narrow(c)
        x = self._input(c)
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                for _ in range(self.warmup):
                    narrow(x)
                times = []
                for _ in range(repeats or self.repeats):
                    start = time.perf_counter()
                    narrow(x)
                    times.append((time.perf_counter() - start) * 1000)
        finally:
            torch.set_num_threads(previous)
        return statistics.median(times)

    def _save_table(self) -> None:
        if self.table_path is None:
            return
        self.table_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.table_path.with_suffix('.tmp')
        tmp.write_text(json.dumps(self._table, indent=1, sort_keys=True))
        os.replace(tmp, self.table_path)


# ---------------------------------------------------------------------------------------------------
# evolution
# ---------------------------------------------------------------------------------------------------
@dataclass
class SearchResult:
    best: Optional[Candidate]
    best_score: Optional[float]
    best_costs: dict
    records: list[dict]             # every scored candidate: candidate, costs, score, generation
    space: SearchSpace
    rejected: int                   # candidates drawn over budget (never scored)

    def top(self, k: int) -> list[dict]:
        return sorted(self.records, key=lambda r: -r['score'])[:k]


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + '.tmp')
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _rng_state(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _set_rng_state(rng: random.Random, state: list) -> None:
    rng.setstate((state[0], tuple(state[1]), state[2]))


def evolve(space: SearchSpace, score: Callable[[Candidate], float], costs: CostModel,
           budgets: Sequence[Budget], population: int = 50, generations: int = 20, mutations: int = 25,
           crossovers: int = 25, parents: int = 10, mutation_prob: float = 0.2, seed: int = 0,
           state_file: Optional[str | Path] = None, log_file: Optional[str | Path] = None,
           progress: Optional[Callable[[str], None]] = None, max_tries: int = 200,
           seeds: Sequence[Candidate] = ()) -> SearchResult:
    """AutoFormer's evolutionary search: a random initial population within budget, then per generation
    `mutations` children of the top `parents` (each dimension redrawn with `mutation_prob`) and
    `crossovers` children of two of them; children over budget or already scored are redrawn (up to
    `max_tries` draws per child). Maximises `score`; never scores a candidate over budget.

    `seeds`: candidates placed in the initial population first (e.g. the uniformly narrowed network of
    the budget, so that the winner is never worse than it).
    `state_file`: written after every scored candidate (atomically) and, when it exists, resumed from
    (same space, budgets and seed required). `log_file`: one JSON line per scored candidate."""
    if population < 1 or generations < 0 or parents < 1:
        raise invalid_argument('evolve', 'population/generations/parents', (population, generations, parents),
                               'population ≥ 1, generations ≥ 0, parents ≥ 1')
    kinds = sorted({b.kind for b in budgets})
    settings = dict(space=space.as_dict(), budgets=[asdict(b) for b in budgets], population=population,
                    generations=generations, mutations=mutations, crossovers=crossovers, parents=parents,
                    mutation_prob=mutation_prob, seed=seed, seeds=[c.key for c in seeds])
    rng = random.Random(seed)
    records: list[dict] = []
    rejected = 0
    phase = dict(generation=0, drawn=0)     # generation 0 = the initial population
    state_path = Path(state_file) if state_file else None
    if state_path and state_path.exists():
        saved = json.loads(state_path.read_text())
        if saved.get('settings') != settings:
            raise ValueError(f'{state_path}: a search with other settings (space, budgets, sizes or seed); '
                             'remove it or pass the same arguments to resume')
        records, rejected, phase = saved['records'], saved['rejected'], saved['phase']
        _set_rng_state(rng, saved['rng'])
    seen = {r['key'] for r in records}
    log = open(log_file, 'a') if log_file else None

    def save() -> None:
        if state_path:
            _write_json(state_path, dict(settings=settings, records=records, rejected=rejected, phase=phase,
                                         rng=_rng_state(rng)))

    def consider(c: Candidate) -> bool:
        nonlocal rejected
        if c.key in seen or not space.contains(c):
            return False
        try:
            fits = costs.within(c, budgets)
        except slimming.NotExportableError:      # no natively narrow model computes this slice: not a result
            seen.add(c.key)
            return False
        if not fits:
            rejected += 1
            seen.add(c.key)          # over budget: never drawn again
            return False
        value = float(score(c))
        record = dict(key=c.key, candidate=c.as_dict(), score=value, generation=phase['generation'],
                      costs=costs.costs(c, kinds))
        records.append(record)
        seen.add(c.key)
        if log:
            log.write(json.dumps(record) + '\n')
            log.flush()
        if progress:
            best = max(records, key=lambda r: r['score'])
            progress(f'generation {phase["generation"]}/{generations}: {len(records)} scored, {rejected} over '
                     f'budget; this {value:.4f}, best {best["score"]:.4f} ({best["key"]})')
        return True

    try:
        while phase['generation'] <= generations:
            g = phase['generation']
            target = population if g == 0 else mutations + crossovers
            while phase['drawn'] < target:
                made = False
                for _ in range(max_tries):
                    if g == 0 and phase['drawn'] < len(seeds):
                        child = seeds[phase['drawn']]
                    elif g == 0:
                        child = space.sample(rng)
                    else:
                        pool = sorted((r for r in records), key=lambda r: -r['score'])[:parents]
                        if not pool:
                            break
                        if phase['drawn'] < mutations:
                            child = space.mutate(Candidate.from_dict(rng.choice(pool)['candidate']), rng,
                                                 mutation_prob)
                        else:
                            a, b = (rng.choice(pool) for _ in range(2))
                            child = space.crossover(Candidate.from_dict(a['candidate']),
                                                    Candidate.from_dict(b['candidate']), rng)
                    if consider(child):
                        made = True
                        break
                phase['drawn'] += 1      # a child slot that found nothing new within budget stays empty
                save()
                if not made and len(seen) >= space.size():
                    break
            phase['generation'] = g + 1
            phase['drawn'] = 0
            save()
            if len(seen) >= space.size():
                break
    finally:
        if log:
            log.close()
    best = max(records, key=lambda r: r['score']) if records else None
    return SearchResult(Candidate.from_dict(best['candidate']) if best else None,
                        best['score'] if best else None, best['costs'] if best else {}, records, space, rejected)


def uniform_within_budget(space: SearchSpace, costs: CostModel, budgets: Sequence[Budget]) -> Optional[Candidate]:
    """The widest uniformly narrowed sub-network (one width everywhere, every block, each stage's largest
    rank ratio) within budget; with searched ranks, when no width fits, the same with one lower rank
    ratio everywhere (`SearchSpace.uniform`), from the largest down."""
    levels = sorted(set().union(*map(set, space.ranks)), reverse=True) if space.ranks else [None]
    for rank in levels:
        for width in sorted(set().union(*map(set, space.widths)), reverse=True):
            c = space.uniform(width, rank=rank)
            try:
                if costs.within(c, budgets):
                    return c
            except slimming.NotExportableError:
                continue
    return None


# ---------------------------------------------------------------------------------------------------
# S3: search the search space
# ---------------------------------------------------------------------------------------------------
def et_errors(records: Sequence[dict], space: SearchSpace, reference: float, top_k: int = 10
              ) -> list[tuple[str, dict]]:
    """S3's E-T error per dimension and value: the mean error (`reference` − score, `reference` being the
    full supernet's score) of the `top_k` best scored candidates holding that value; None where no
    scored candidate holds it."""
    table = []
    for index, (name, values) in enumerate(space.dimensions):
        row = {}
        for v in values:
            scores = sorted((r['score'] for r in records if Candidate.from_dict(r['candidate']).values()[index] == v),
                            reverse=True)[:top_k]
            row[v] = reference - statistics.fmean(scores) if scores else None
        table.append((name, row))
    return table


def narrow_space(space: SearchSpace, errors: list[tuple[str, dict]]) -> SearchSpace:
    """The next round's space: per dimension, drop the values no candidate within budget reached, then,
    while more than two values remain, the end of the range (smallest or largest value) whose E-T error
    is the larger — the range shifts and shrinks toward lower error, as S3 evolves its space."""
    new = []
    for (name, values), (_, row) in zip(space.dimensions, errors):
        kept = [v for v in values if row.get(v) is not None] or list(values)
        if len(kept) > 2:
            low, high = row.get(kept[0]), row.get(kept[-1])
            kept = kept[1:] if low >= high else kept[:-1]
        new.append(kept)
    n, m, q = len(space.widths), len(space.depths), len(space.ranks)
    return SearchSpace(list(space.groups), new[:n], new[n:n + m], new[n + m + q] if space.sizes else [],
                       new[n + m:n + m + q])


# ---------------------------------------------------------------------------------------------------
# scoring with a config's validation metric (OpenMMLab)
# ---------------------------------------------------------------------------------------------------
def _batchnorms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_batchnorm(backbone: nn.Module, inputs: Iterable[torch.Tensor]) -> list[dict]:
    """BatchNorm statistics of the backbone as it runs now (its active sub-network) from `inputs`: reset,
    then the cumulative average over the batches in training mode (no gradients), written where the
    active width keeps them (its per-width rows). Returns every BN buffer as it was (`restore_batchnorm`)."""
    bns = _batchnorms(backbone)
    saved = [{name: value.clone() for name, value in bn._buffers.items() if value is not None} for bn in bns]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        for name, value in bn._buffers.items():
            if value is not None:
                value.fill_(1.0 if name.endswith('running_var') else 0.0)
        bn.momentum = None
    was_training = backbone.training
    backbone.train()
    for bn in bns:
        bn.train()                  # also under norm_eval=True
    try:
        for x in inputs:
            backbone(x)
    finally:
        backbone.train(was_training)
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
    return saved


@torch.no_grad()
def restore_batchnorm(backbone: nn.Module, saved: list[dict]) -> None:
    for bn, buffers in zip(_batchnorms(backbone), saved):
        for name, value in buffers.items():
            bn._buffers[name].copy_(value)


def with_test_size(pipeline: Sequence[dict], size: Size) -> list[dict]:
    """A detection / segmentation test pipeline resizing images to (H, W) = `size` (aspect kept: its
    `Resize` step's scale replaced, or one inserted after image loading). Top-down pose pipelines are
    refused: their input size is the codec's, a property of the trained head."""
    steps = [dict(step) for step in pipeline]
    kinds = [str(step.get('type', '')).split('.')[-1] for step in steps]
    if 'TopdownAffine' in kinds:
        raise invalid_argument('search', '--sizes', list(size), 'no --sizes for a top-down pose config (its '
                               'input size is the codec\'s, fixed by the trained heatmap head)')
    resize = dict(type='Resize', scale=(int(size[1]), int(size[0])), keep_ratio=True)
    if 'Resize' in kinds:
        steps[kinds.index('Resize')] = dict(steps[kinds.index('Resize')], scale=resize['scale'], keep_ratio=True)
    elif 'LoadImageFromFile' in kinds:
        steps.insert(kinds.index('LoadImageFromFile') + 1, resize)
    else:
        raise invalid_argument('search', '--sizes', list(size), 'a test pipeline with LoadImageFromFile or Resize')
    return steps


_DEFAULT_METRICS = ('coco/bbox_mAP', 'mIoU', 'coco/AP', 'PCK', 'accuracy/top1')


class ConfigScorer:
    """Scores candidates by the config's validation metric with the checkpoint's (inherited) weights.

    Built once: the task model (a `backbones.ScalaModel`'s inner model), the val dataloader and
    evaluator of `config`. Per candidate: the backbone runs as the sub-network; where it has BatchNorm,
    its statistics are recalibrated (reset, then the cumulative average of `bn_batches` training batches
    at that sub-network, no gradients), used for the evaluation and restored afterwards."""

    def __init__(self, config: str, checkpoint: str, metric: Optional[str] = None, bn_batches: int = 4,
                 work_dir: Optional[str] = None, cfg_options: Optional[dict] = None):
        from mmengine.runner import Runner
        from .registry import _task_model
        from .runner import _install_checkpoint_loader, prepare_config, trust_checkpoints_under
        cfg = prepare_config(config, work_dir, cfg_options)
        cfg.val_cfg = dict(type='ValLoop')          # one width per evaluation: ours (not ScalaValLoop's)
        cfg.load_from = None
        cfg.log_level = 'WARNING'
        _install_checkpoint_loader()
        trust_checkpoints_under(str(Path(checkpoint).resolve().parent))
        self.runner = Runner.from_cfg(cfg)
        self.runner.load_checkpoint(checkpoint, map_location='cpu', strict=True)
        self.cfg = cfg
        self.task = _task_model(self.runner.model)
        self.task.eval()
        self.backbone = self.task.backbone
        if not slimming.is_slimmable(self.backbone):
            raise invalid_argument('search', 'model.backbone.slimmable', None, 'a slimmable backbone config')
        loop = self.runner.val_loop                 # builds the dataloader and the evaluator (dataset meta)
        self.val_loader, self.evaluator = loop.dataloader, loop.evaluator
        self.metric = metric
        self.bn_batches = bn_batches
        self.train_loader = (Runner.build_dataloader(cfg.train_dataloader, seed=0)
                             if _batchnorms(self.backbone) and bn_batches else None)
        self._loaders: dict = {}
        self._calibration: Optional[list[torch.Tensor]] = None

    @torch.no_grad()
    def __call__(self, c: Candidate) -> float:
        with self.at(c):
            metrics = self.evaluate(c.size)
        return self._pick(metrics)

    @contextlib.contextmanager
    def at(self, c: Candidate) -> Iterator[None]:
        """The model as the sub-network `c` with its BN statistics recalibrated (where it has BN); on
        exit width 1 and the stored statistics again."""
        c.apply(self.backbone)
        saved = None
        try:
            if self.train_loader is not None:
                saved = recalibrate_batchnorm(self.backbone, self._calibration_inputs(c.size))
            yield
        finally:
            if saved is not None:
                restore_batchnorm(self.backbone, saved)
            slimming.set_width(self.backbone, 1.0)

    def _calibration_inputs(self, size: Optional[Size] = None) -> Iterator[torch.Tensor]:
        """The same `bn_batches` training batches for every candidate (drawn once: deterministic scores, and
        an infinite sampler's iterator is not restarted), resized to `size`."""
        if self._calibration is None:
            self._calibration = []
            batches = iter(self.train_loader)
            for _ in range(self.bn_batches):
                inputs = self.task.data_preprocessor(next(batches), False)['inputs']
                for x in ([inputs] if isinstance(inputs, torch.Tensor) else inputs):
                    self._calibration.append(x if x.dim() == 4 else x[None])
        for x in self._calibration:
            yield x if size is None else torch.nn.functional.interpolate(x, size=size, mode='bilinear')

    def input_size(self) -> tuple[int, int]:
        """(H, W) of the first validation batch as the model receives it (after the data preprocessor)."""
        batch = next(iter(self.val_loader))
        inputs = self.task.data_preprocessor(batch, False)['inputs']
        first = inputs if isinstance(inputs, torch.Tensor) else inputs[0]
        return int(first.shape[-2]), int(first.shape[-1])

    def evaluate(self, size: Optional[Size] = None) -> dict:
        """The config's validation metrics of the model as it is now (images resized to `size`)."""
        loader = self._loader(size)
        for batch in loader:
            self.evaluator.process(data_samples=self.task.val_step(batch), data_batch=batch)
        return self.evaluator.evaluate(len(loader.dataset))

    def _loader(self, size: Optional[Size]):
        if size is None:
            return self.val_loader
        if size not in self._loaders:
            from mmengine.runner import Runner
            cfg = copy.deepcopy(self.cfg.val_dataloader)
            cfg.dataset.pipeline = with_test_size(cfg.dataset.pipeline, size)
            self._loaders[size] = Runner.build_dataloader(cfg)
        return self._loaders[size]

    def _pick(self, metrics: dict) -> float:
        if self.metric is None:
            self.metric = next((k for name in _DEFAULT_METRICS for k in metrics if k.endswith(name)),
                               next(iter(metrics)))
        if self.metric not in metrics:
            raise KeyError(f'search: metric {self.metric!r} not among the evaluator\'s {sorted(metrics)}')
        return float(metrics[self.metric])


# ---------------------------------------------------------------------------------------------------
# the command: backbones search CONFIG CHECKPOINT --budget ... --out DIR
# ---------------------------------------------------------------------------------------------------
def _progress_printer(quiet: bool) -> Callable[[str], None]:
    """One status line rewritten in place on a terminal; every 10th update as a line otherwise."""
    if quiet:
        return lambda text: None
    calls = [0]

    def say(text: str) -> None:
        calls[0] += 1
        if sys.stderr.isatty():
            print(f'\r\x1b[2K{text}', end='', file=sys.stderr, flush=True)
        elif calls[0] % 10 == 1:
            print(text, file=sys.stderr, flush=True)
    return say


def measure_exported(backbone: nn.Module, c: Candidate, size: tuple[int, int], threads: int,
                     repeats: int = 10) -> dict:
    """The benchmark's measurement (a fresh subprocess) of the exported sub-network: median latency and
    steady peak activation memory with the fixed allocator (the memory model's reference), plus
    `memory_total_bytes` = weights + input + that peak (what the memory budget's model predicts)."""
    from . import benchmark
    from .memory import FIXED_MMAP_THRESHOLD, _state_bytes
    narrow = c.export(backbone)
    cls = type(narrow)
    variant = f'{cls.ZOO_PREFIX}-{next(iter(cls.ARCHS))}'      # any variant of the family: arch replaced
    record = benchmark.measure(benchmark.Config(variant=variant, size=tuple(size), batch=1, threads=threads,
                                                warmup=2, repeats=repeats, steady_peak=True,
                                                malloc_mmap_threshold=FIXED_MMAP_THRESHOLD,
                                                **benchmark._narrow_fields(narrow)))
    if 'error' in record:
        raise RuntimeError(f'measurement of the exported sub-network failed: {record["error"]}')
    if record.get('peak_mem_mib') is not None:
        record['memory_total_bytes'] = int(_state_bytes(narrow) + 3 * size[0] * size[1] * 4
                                           + record['peak_mem_mib'] * 2 ** 20)
    return record


def _pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated (lower cost and higher score), by cost."""
    front, best = [], -math.inf
    for cost, score in sorted(points, key=lambda p: (p[0], -p[1])):
        if score > best:
            front.append((cost, score))
            best = score
    return front


def plot(records: Sequence[dict], kind: str, budget: Optional[float], metric: str, path: Path,
         marks: Sequence[tuple[str, float, float]] = ()) -> Optional[Path]:
    """Metric vs cost of every scored candidate with the Pareto front (PNG); None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    scale, unit = {'latency': (1, 'ms'), 'memory': (2 ** -20, 'MiB'), 'params': (1e-6, 'M'),
                   'macs': (1e-9, 'G')}[kind]
    pts = [(r['costs'][kind] * scale, r['score']) for r in records if kind in r['costs']]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=10, alpha=0.5, label='scored candidates')
    front = _pareto(pts)
    ax.plot([p[0] for p in front], [p[1] for p in front], 'r.-', label='Pareto front')
    for label, cost, score in marks:
        ax.scatter([cost * scale], [score], marker='*', s=120, label=label)
    if budget is not None:
        ax.axvline(budget * scale, color='gray', ls='--', label='budget')
    ax.set_xlabel(f'{kind} ({unit})')
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('config', help='a config whose backbone is slimmable (e.g. a Scala training config)')
    parser.add_argument('checkpoint', help='its trained checkpoint (the supernet)')
    parser.add_argument('--budget', action='append', required=True,
                        help='latency=120ms | memory=256MB | params=10M | macs=2G, or a fraction of the full '
                             "network's cost, e.g. macs=0.5x (repeat to combine kinds)")
    parser.add_argument('--out', default=None, help='output directory (default work_dirs/search/<config>)')
    parser.add_argument('--population', type=int, default=50)
    parser.add_argument('--generations', type=int, default=20)
    parser.add_argument('--mutations', type=int, default=25, help='children by mutation per generation')
    parser.add_argument('--crossovers', type=int, default=25, help='children by crossover per generation')
    parser.add_argument('--parents', type=int, default=10, help='top-k candidates the children come from')
    parser.add_argument('--mutation-prob', type=float, default=0.2)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--widths', type=float, nargs='+', help='restrict the width values (trained widths)')
    parser.add_argument('--no-depth', action='store_true', help='keep every block (search widths only)')
    parser.add_argument('--ranks', type=float, nargs='+',
                        help='rank ratio values per stage, e.g. 1.0 0.9 0.7 0.5 (a supernet with lowrank= beside '
                             'slimmable=; a stage takes those up to its built ratio); default: the built ratios')
    parser.add_argument('--min-depth', type=int, default=1, help='fewest blocks a stage keeps')
    parser.add_argument('--evolve-space', action='store_true',
                        help="S3: after each round, E-T error per dimension value, narrow the space, search again")
    parser.add_argument('--rounds', type=int, default=2, help='search rounds with --evolve-space')
    parser.add_argument('--top-k', type=int, default=10, help='E-T error: top-k candidates per value')
    parser.add_argument('--metric', help='validation metric to maximise (default: the task\'s main metric)')
    parser.add_argument('--bn-batches', type=int, default=4,
                        help='training batches recalibrating BatchNorm per candidate (families with BN)')
    parser.add_argument('--size', help='HxW the costs are taken at (default: the config\'s validation input size)')
    parser.add_argument('--sizes', nargs='+', help='search the input size too among these HxW (detection and '
                        'segmentation configs: the test pipeline resizes to the size, aspect kept)')
    parser.add_argument('--threads', type=int, default=1, help='threads for latency')
    parser.add_argument('--latency-table', help='latency table file (default: the cache directory\'s '
                        'search_latency.json; one entry per machine, size, threads and candidate)')
    parser.add_argument('--no-measure', action='store_true', help='skip the winner\'s re-measurement')
    parser.add_argument('--quiet', action='store_true', help='no progress line')


def cmd_search(args: argparse.Namespace) -> int:
    from .hub import cache_dir
    from .memory import parse_size
    budgets = [parse_budget(b) for b in args.budget]
    if len({b.kind for b in budgets}) != len(budgets):
        raise invalid_argument('search', '--budget', args.budget, 'one budget per kind')
    if args.rounds < 1:
        raise invalid_argument('search', '--rounds', args.rounds, 'a positive integer')
    out = Path(args.out or Path('work_dirs') / 'search' / Path(args.config).stem)
    out.mkdir(parents=True, exist_ok=True)
    scorer = ConfigScorer(args.config, args.checkpoint, args.metric, args.bn_batches, work_dir=str(out / 'runner'))
    size = parse_size(args.size) if args.size else scorer.input_size()
    backbone = scorer.backbone
    sizes = [parse_size(text, '--sizes') for text in args.sizes or ()]
    for s in sizes:
        with_test_size(scorer.cfg.val_dataloader.dataset.pipeline, s)       # refused early where unsupported
    space = SearchSpace.of(backbone, args.widths, depth=not args.no_depth, min_depth=args.min_depth,
                           sizes=sizes, ranks=args.ranks)
    costs = CostModel(backbone, size, threads=args.threads,
                      latency_table=args.latency_table or cache_dir() / 'search_latency.json',
                      name=f'{Path(args.config).stem}')
    say = _progress_printer(args.quiet)
    full = space.uniform(1.0)
    budgets = [b.resolve(costs.cost(full, b.kind)) for b in budgets]
    reference = scorer(full)
    print(f'supernet {Path(args.checkpoint).name}: {scorer.metric} {reference:.4f} at full width; costs at '
          f'{size[0]}x{size[1]}: ' + ', '.join(f'{k} {_format_cost(k, v)}' for k, v in
                                              costs.costs(full, [b.kind for b in budgets]).items()))
    print('budget: ' + ', '.join(map(str, budgets)) + f'; space ({space.size()} sub-networks): {space.describe()}')
    rounds = args.rounds if args.evolve_space else 1
    records: list[dict] = []
    known: dict[str, float] = {full.key: reference}

    def scored(c: Candidate) -> float:       # a candidate of an earlier round is not scored again
        if c.key not in known:
            known[c.key] = scorer(c)
        return known[c.key]

    uniform = uniform_within_budget(space, costs, budgets)     # the baseline; seeded into the population
    report = [f'# Search: {args.config}', '', f'Checkpoint `{args.checkpoint}`, metric `{scorer.metric}` '
              f'(full supernet {reference:.4f}), budget {", ".join(map(str, budgets))}, costs at '
              f'{size[0]}x{size[1]} batch 1 ({args.threads} thread(s) for latency), seed {args.seed}, population '
              f'{args.population}, {args.generations} generations ({args.mutations} mutations + {args.crossovers} '
              'crossovers of the top {0} per generation).'.format(args.parents), '']
    result = None
    for r in range(rounds):
        print(f'round {r + 1}/{rounds}: {space.describe()}')
        report += [f'## Round {r + 1}', '', f'Space ({space.size()} sub-networks): {space.describe()}', '']
        result = evolve(space, scored, costs, budgets, args.population, args.generations, args.mutations,
                        args.crossovers, args.parents, args.mutation_prob, args.seed + r,
                        state_file=out / f'state_round{r + 1}.json', log_file=out / f'candidates_round{r + 1}.jsonl',
                        progress=say, seeds=[uniform] if uniform is not None and space.contains(uniform) else [])
        if not args.quiet and sys.stderr.isatty():
            print(file=sys.stderr)
        records += [dict(rec, round=r + 1) for rec in result.records]
        if result.best is None:
            raise ValueError(f'search: no sub-network of the space fits the budget {", ".join(map(str, budgets))} '
                             f'({result.rejected} drawn, all over budget); the smallest is '
                             + ', '.join(f'{k} {_format_cost(k, v)}' for k, v in
                                         costs.costs(space.smallest(), [b.kind for b in budgets]).items()))
        print(f'round {r + 1}: {len(result.records)} scored, {result.rejected} over budget; best {result.best_score:.4f} '
              f'{result.best.key}')
        report += [f'{len(result.records)} candidates scored, {result.rejected} drawn over budget (not scored); '
                   f'best {result.best_score:.4f}: `{result.best.key}`.', '']
        if args.evolve_space and r < rounds - 1:
            errors = et_errors(result.records, space, reference, args.top_k)
            report += ['E-T error (full supernet score − mean score of the top-k candidates holding the value; '
                       '– where no candidate within budget holds it):', '', '| dimension | ' + ' | '.join(
                           'value: E-T' for _ in range(1)) + ' |', '|---|---|']
            for name, row in errors:
                shown = ', '.join(f'{_shown(v)}: ' + ('–' if e is None else f'{e:.4f}') for v, e in row.items())
                print(f'  E-T {name}: {shown}')
                report.append(f'| {name} | {shown} |')
            space = narrow_space(space, errors)
            report.append('')
    best = max(records, key=lambda rec: rec['score'])
    winner = Candidate.from_dict(best['candidate'])
    uniform_score = scored(uniform) if uniform is not None else None
    kinds = [b.kind for b in budgets]
    rows = [('searched', winner, best['score'])] + ([('uniform', uniform, uniform_score)] if uniform else [])
    with_ranks = bool(space.ranks)
    report += ['## Result', '', 'Costs "(model)" are the stated models\' (memory: weights + input + predicted '
               'activation peak); "measured" are the benchmark\'s, in a fresh process (latency: median, batch 1, '
               f'{args.threads} thread(s); memory: weights + input + the steady activation peak measured).', '',
               '| sub-network | widths | depths | ' + ('ranks | ' if with_ranks else '') + 'size | ' + scorer.metric
               + ' | ' + ' | '.join(f'{k} (model)' for k in kinds) + ('' if 'params' in kinds else ' | params') +
               ' | latency measured (ms) | memory measured (MiB) |',
               '|---' * (7 + with_ranks + len(kinds) + ('params' not in kinds)) + '|']
    measured = {}
    for label, c, value in rows:
        m = None if args.no_measure else measure_exported(backbone, c, c.size or size, args.threads)
        measured[label] = m
        report.append(f'| {label} | {list(c.widths)} | {list(c.depths) or "-"} | '
                      + (f'{list(c.ranks)} | ' if with_ranks else '') + f'{_shown(c.size or size)} | '
                      f'{value:.4f} | ' + ' | '.join(_format_cost(k, costs.cost(c, k)) for k in kinds) +
                      ('' if 'params' in kinds else f' | {costs.cost(c, "params") / 1e6:.3f}M') + ' | ' +
                      (f'{m["median_ms"]:.1f}' if m else '-') + ' | ' +
                      (f'{m["memory_total_bytes"] / 2 ** 20:.1f}' if m and 'memory_total_bytes' in m else '-') + ' |')
    from .cli import export_files
    with scorer.at(winner):     # the weights as scored: BN statistics recalibrated for the winner
        state = {k: v.detach().clone() for k, v in scorer.runner.model.state_dict().items()}
    config_path, ckpt_path = export_files(args.config, state, list(winner.widths), list(winner.depths) or None,
                                          str(out), 'winner', Path(args.checkpoint).name, size=winner.size,
                                          ranks=list(winner.ranks) or None)
    figure = plot(records, budgets[0].kind, budgets[0].limit, scorer.metric, out / 'pareto.png',
                  [('searched', best['costs'][budgets[0].kind], best['score'])]
                  + ([('uniform', costs.cost(uniform, budgets[0].kind), uniform_score)] if uniform else []))
    report += ['', f'Winner exported: `{config_path}` + `{ckpt_path.name}` (natively narrow backbone, '
               'outputs equal the supernet slice).', f'Plot: `{figure}`.' if figure else 'Plot: matplotlib missing.',
               'Every scored candidate: `candidates_round*.jsonl`; state (resumable): `state_round*.json`.']
    (out / 'report.md').write_text('\n'.join(report) + '\n')
    _write_json(out / 'result.json', dict(winner=winner.as_dict(), score=best['score'], costs=best['costs'],
                                          uniform=uniform.as_dict() if uniform else None, uniform_score=uniform_score,
                                          uniform_costs=costs.costs(uniform, kinds) if uniform else None,
                                          measured=measured, metric=scorer.metric, reference=reference,
                                          budgets=[str(b) for b in budgets], size=list(size)))
    print(f'winner {winner.key}: {scorer.metric} {best["score"]:.4f} (uniform '
          + (f'{uniform.key}: {uniform_score:.4f}' if uniform else 'none within budget') + ')')
    print(f'wrote {out / "report.md"}')
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .cli import main as cli_main
    return cli_main(['search', *(sys.argv[1:] if argv is None else argv)])


if __name__ == '__main__':
    sys.exit(main())
