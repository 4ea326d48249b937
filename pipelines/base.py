"""The one small interface between the HTTP server and a pipeline.

A pipeline is built from a weights directory onto a device, then called with its typed
parameters and the decoded inputs; it returns images (uint8 HWC RGB arrays) or a video
(encoded mp4 bytes). This module imports no torch so the server can use its types.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol

import numpy as np


class InputError(ValueError):
    """The request's content made the pipeline fail (e.g. no face): the client's fault, HTTP 400."""


class WeightsMissing(RuntimeError):
    """A file the pipeline needs is not installed in the weights directory."""

    def __init__(self, pipeline: str, missing: list[str]):
        self.pipeline = pipeline
        self.missing = missing
        super().__init__(
            f"weights for {pipeline} are not installed: run scripts/download_weights.py {pipeline}"
        )


class LicenceRefused(RuntimeError):
    """A required component is non-commercial and the deployment did not allow that."""


@dataclass
class Audio:
    """Decoded audio: mono float32 samples in [-1, 1] at ``sample_rate``."""

    samples: np.ndarray
    sample_rate: int


@dataclass
class PipelineResult:
    """What a pipeline returns: images (uint8 HWC RGB) or one encoded video."""

    images: list[np.ndarray] = field(default_factory=list)
    video: bytes | None = None
    video_mime: str = "video/mp4"
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadOptions:
    """How to load a pipeline: where its files are and what it runs on."""

    weights_dir: Path
    device: str = "cpu"
    dtype: str = "float32"  # float32 | float16 | bfloat16 (CUDA only)
    allow_noncommercial: bool = False


class Pipeline(Protocol):
    """Implemented by every endpoint's pipeline class."""

    name: str

    @classmethod
    def load(cls, options: LoadOptions) -> "Pipeline":
        """Load every component from ``options.weights_dir``; raise WeightsMissing / LicenceRefused."""

    def components(self) -> list[dict[str, Any]]:
        """The loaded components: ``{"id", "file", "licence", "commercial_use"}`` each (for /ready)."""

    def __call__(
        self, params: Mapping[str, Any], inputs: Mapping[str, Any], seed: int
    ) -> PipelineResult:
        """Run one request. ``params`` are the validated request fields (no media), ``inputs``
        the decoded media (images as uint8 HWC RGB arrays, audio as ``Audio``), ``seed`` drives
        every random draw."""
