"""Shared test fixtures: paths to the official golden outputs and a quiet, seeded torch."""
import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_FIXTURES = Path(
    os.environ.get('STL_MM_FIXTURES', REPO_ROOT.parent / 'shared' / 'fixtures' / 'fan_official'))


@pytest.fixture(scope='session')
def official_fixtures() -> Path:
    """Folder of golden outputs of the official FAN/STL code (see its README.md)."""
    if not (OFFICIAL_FIXTURES / 'manifest.json').is_file():
        raise FileNotFoundError(
            f'Golden fixtures not found at {OFFICIAL_FIXTURES}. Check out shared/ beside the '
            'repository or set STL_MM_FIXTURES to the fan_official folder.')
    return OFFICIAL_FIXTURES


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    """A Runner leaves its config's default scope (mmseg, mmdet, ...) current for the rest of
    the process, and later registry lookups (module fixtures included) would search the wrong
    codebase first: every test ends with no default scope set."""
    from mmengine.registry import DefaultScope
    DefaultScope._instance_dict.clear()


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    yield
