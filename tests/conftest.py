import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / 'tests' / 'golden'

torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '1') or 1))


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: end-to-end runs (training, distributed); run in CI too')


def golden_case(family: str, case: str) -> dict:
    """A golden fixture (copied from ../shared/golden into tests/golden so a plain checkout runs it)."""
    return torch.load(GOLDEN / family / f'{case}.pt', weights_only=True)


@pytest.fixture
def repo() -> Path:
    return REPO
