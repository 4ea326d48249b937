"""The request fields the expression editor reads, named as in ``server.protocol.ExpressionEditorRequest``
(the single source of their ranges and defaults); torch-free so the server can build it."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Params:
    aaa: float
    eee: float
    woo: float
    smile: float
    wink: float
    blink: float
    eyebrow: float
    pupil_x: float
    pupil_y: float
    rotate_pitch: float
    rotate_yaw: float
    rotate_roll: float
    sample_parts: str
    output: str
