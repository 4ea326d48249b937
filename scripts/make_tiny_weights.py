#!/usr/bin/env python3
"""Write the tiny profile (small random checkpoints in the official formats) to weights/tiny/."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.weights.tiny import main  # noqa: E402

raise SystemExit(main())
