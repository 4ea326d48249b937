"""Tiny-profile hook for the files several pipelines share (pipelines/weights/tiny.py).

InsightFace packs and inswapper (faceswap, and the InstantID pipelines' antelopev2), GFPGAN,
ParseNet, RetinaFace and the AWing FAN (faceswap, sadtalker), SDXL base and its Lightning LoRA.
"""
from __future__ import annotations

from pathlib import Path

from pipelines.weights.manifest import load_manifest

from .tiny_insightface import write_tiny_insightface
from .tiny_restore import write_tiny_restore
from .tiny_sdxl import write_tiny_sdxl


def write_tiny(dest: Path) -> None:
    manifest = load_manifest()
    write_tiny_insightface(dest)
    write_tiny_restore(dest)
    sdxl_dir = (dest / manifest["sdxl.base.model_index"].dest).parent
    write_tiny_sdxl(sdxl_dir, dest / manifest["sdxl.lightning_8step_lora"].dest)
