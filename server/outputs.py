"""Media out: encoding results and keeping v2 result files at unguessable ``/outputs`` names."""
from __future__ import annotations

import base64
import io
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipelines.base import PipelineResult
from server.datafiles import make_private_dir, write_private

MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "mp4": "video/mp4"}
EXTENSION = {"png": "png", "jpeg": "jpg", "webp": "webp", "mp4": "mp4"}
MIME_EXTENSION = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "video/mp4": "mp4",
                  "video/webm": "webm"}
OUTPUT_NAME = re.compile(r"^[A-Za-z0-9_-]{32}\.(png|jpg|webp|mp4|webm)$")


@dataclass(frozen=True)
class OutputFile:
    data: bytes
    mime: str
    ext: str

    def data_uri(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode()}"


def flatten_on_white(rgba: np.ndarray) -> np.ndarray:
    """RGBA → RGB over white, for formats without alpha (sticker-and-character.md §0.3)."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def encode_image(pixels: np.ndarray, fmt: str, quality: int) -> bytes:
    """png/jpeg/webp bytes of a uint8 HW, HWC RGB or HWC RGBA array; png and webp keep alpha."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    if pixels.ndim == 3 and pixels.shape[2] == 4 and fmt == "jpeg":
        pixels = flatten_on_white(pixels)
    image = Image.fromarray(pixels)
    buffer = io.BytesIO()
    # Quality applies to jpeg/webp only; optimize=True as the reference wrapper saves
    # (expression-editor.md §4.12).
    if fmt == "png":
        image.save(buffer, format="PNG")
    elif fmt == "jpeg":
        image.save(buffer, format="JPEG", quality=quality, optimize=True)
    else:
        image.save(buffer, format="WEBP", quality=quality)
    return buffer.getvalue()


def encode_result(result: PipelineResult, fmt: str, quality: int) -> list[OutputFile]:
    if result.video is not None:
        ext = MIME_EXTENSION.get(result.video_mime, "mp4")
        return [OutputFile(result.video, result.video_mime, ext)]
    if not result.images:
        raise RuntimeError("the pipeline returned no output")
    return [OutputFile(encode_image(image, fmt, quality), MIME[fmt], EXTENSION[fmt]) for image in result.images]


class OutputStore:
    """v2 result files under random names; a file lives ``ttl_s`` after it was written."""

    def __init__(self, folder: Path, ttl_s: float):
        self.folder = Path(folder)
        self.ttl_s = ttl_s

    def save(self, output: OutputFile) -> str:
        make_private_dir(self.folder)
        name = f"{secrets.token_urlsafe(24)}.{output.ext}"  # 192 random bits: unguessable
        write_private(self.folder / name, output.data)
        return name

    def path(self, name: str) -> Path | None:
        """The file behind a public name, or None if the name is malformed, unknown or expired."""
        if not OUTPUT_NAME.match(name):
            return None
        path = self.folder / name
        try:
            if time.time() - path.stat().st_mtime > self.ttl_s:
                return None
        except FileNotFoundError:
            return None
        return path

    def sweep(self, now: float | None = None) -> int:
        """Delete expired files; returns how many."""
        now = time.time() if now is None else now
        removed = 0
        if self.folder.is_dir():
            for path in self.folder.iterdir():
                if OUTPUT_NAME.match(path.name) and now - path.stat().st_mtime > self.ttl_s:
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed
