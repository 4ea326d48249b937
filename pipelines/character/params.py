"""The request fields consistent-character reads, named as in
``server.protocol.ConsistentCharacterRequest`` (the single source of their ranges and defaults);
torch-free so the server can build it."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Params:
    prompt: str
    negative_prompt: str
    randomise_poses: bool
    number_of_outputs: int
    number_of_images_per_pose: int
