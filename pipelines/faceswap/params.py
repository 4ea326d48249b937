"""The request fields faceswap-v4 reads, named as in ``server.protocol.FaceSwapRequest`` (the single
source of their ranges and defaults); torch-free so the server can build it."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Params:
    model_type: str
    swap_type: str
    style_type: str
