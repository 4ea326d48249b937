"""Repo-wide test fixtures.

``tiny_weights`` is the tiny profile (pipelines/weights/tiny.py) written once per test session, for
every pipeline, so each package's tests load the production loaders on the same small files. The
folder is named ``tiny`` so that a server can find it as ``<weights_root>/tiny`` with
``weights="tiny"`` (server/settings.py), as ``FACEFOUNDRY_WEIGHTS=tiny`` deployments do.

``one_thread`` and ``seeded_no_grad`` are for ``pytest.mark.usefixtures`` in modules that run
networks on the CPU.
"""
from __future__ import annotations

from pathlib import Path

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "missing_fixtures(reason): parity fixtures are absent (tests/parity/fixtures.py)")


def pytest_runtest_setup(item):
    marker = item.get_closest_marker("missing_fixtures")
    if marker is not None:
        from tests.parity.fixtures import missing_fixtures

        missing_fixtures(marker.kwargs["reason"])


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """The directory holding the tiny profile of every registered pipeline."""
    from pipelines.weights.tiny import write_tiny_profile

    dest = tmp_path_factory.mktemp("tiny", numbered=False)
    write_tiny_profile(dest)
    return dest


@pytest.fixture(scope="module")
def one_thread():
    """One torch intra-op thread for the module's tests (tests/torch_threads.py says why)."""
    from tests.torch_threads import one_torch_thread

    with one_torch_thread():
        yield


@pytest.fixture
def seeded_no_grad():
    """torch's global generator seeded with 0 and autograd off: each test draws the same random
    inputs whatever ran before it, and runs networks as inference does."""
    import torch

    torch.manual_seed(0)
    with torch.no_grad():
        yield
