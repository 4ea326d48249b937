"""consistent-character fixtures: one torch thread (tests/torch_threads.py says why)."""
from __future__ import annotations

import pytest

from tests.torch_threads import one_torch_thread


@pytest.fixture(scope="package", autouse=True)
def one_thread():
    with one_torch_thread():
        yield
