"""Repo-wide test fixtures.

``tiny_weights`` is the tiny profile (pipelines/weights/tiny.py) written once per test session, for
every pipeline, so each package's tests load the production loaders on the same small files. The
folder is named ``tiny`` so that a server can find it as ``<weights_root>/tiny`` with
``weights="tiny"`` (server/settings.py), as ``FACEFOUNDRY_WEIGHTS=tiny`` deployments do.
"""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """The directory holding the tiny profile of every registered pipeline."""
    from pipelines.weights.tiny import write_tiny_profile

    dest = tmp_path_factory.mktemp("tiny", numbered=False)
    write_tiny_profile(dest)
    return dest
