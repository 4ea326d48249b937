#!/usr/bin/env python3
"""Fetch and verify the checkpoint files in weights/manifest.toml (see --help)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.weights.download import main  # noqa: E402

raise SystemExit(main())
