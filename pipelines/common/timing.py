"""Per-stage wall time of one pipeline call, reported in ``PipelineResult.info["timings"]``.

scripts/bench.py reads these; on CUDA the device is synchronised at each stage's end so the
time lands in the stage that queued the work.
"""
from __future__ import annotations

import time
from contextlib import contextmanager


class StageTimer:
    def __init__(self, device: str = "cpu"):
        self.device = device
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.startswith("cuda"):
                import torch

                torch.cuda.synchronize(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
