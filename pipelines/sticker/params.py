"""The request fields face-to-sticker reads, named as in ``server.protocol.FaceToStickerRequest``
(the single source of their ranges and defaults); torch-free so the server can build it."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Params:
    prompt: str
    negative_prompt: str
    steps: int
    width: int
    height: int
    upscale: bool
    upscale_steps: int
    prompt_strength: float
    ip_adapter_noise: float
    ip_adapter_weight: float
    instant_id_strength: float
