"""The request fields SadTalker reads, named as in ``server.protocol.SadTalkerRequest`` (the single
source of their ranges and defaults, including ``still``'s per-preprocess default); torch-free so the
server can build it."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Params:
    pose_style: int
    expression_scale: float
    preprocess: str
    image_size: int
    enhancer: bool
    still: bool
