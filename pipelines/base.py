"""The one small interface between the HTTP server and a pipeline.

A pipeline is built from a weights directory onto a device, then called with its typed
parameters and the decoded inputs; it returns images (uint8 HWC RGB arrays) or a video
(encoded mp4 bytes). This module imports no torch so the server can use its types.

Parameters: each pipeline package has a torch-free ``params.py`` whose frozen ``Params`` dataclass
(no defaults) names the request fields the pipeline reads exactly as the protocol model does; the
server builds it from the validated request, so names, ranges and defaults live in one place
(``server/protocol.py``). Deployment settings reach a pipeline through ``LoadOptions``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

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


class Cancelled(Exception):
    """Raised by a ``progress`` callback when the job was cancelled (its client gave up, or a v2
    cancel); the pipeline lets it propagate, so the work stops at the next stage boundary."""


# ``progress(done, total)``: called at stage boundaries (after each image for multi-image
# endpoints); may raise Cancelled.
Progress = Callable[[int, int], None]


def report_progress(progress: Progress | None, done: int, total: int) -> None:
    """Call ``progress`` when one was given: the one place pipelines reach the callback."""
    if progress is not None:
        progress(done, total)


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
    # The deployment's limit on input audio (the server's ``max_audio_seconds``); unlimited when
    # a pipeline is used outside the server.
    max_audio_seconds: float = float("inf")
    # face-to-sticker's background remover: "rmbg-1.4" (the workflow's, non-commercial) or
    # "isnet-general-use" (Apache-2.0), sticker-and-character.md §8.
    background_remover: str = "rmbg-1.4"


class Pipeline(Protocol):
    """Implemented by every endpoint's pipeline class.

    Optional, read by the server when present: a class attribute ``half_precision = True`` (its
    parity allows float16, so ``--dtype auto`` gives it float16 on CUDA); ``free_memory()`` (drop
    caches after a CUDA out-of-memory error or an idle unload); ``onnx_providers()`` (the
    onnxruntime execution providers its sessions use, for /ready).
    """

    name: str
    params_type: type

    @classmethod
    def load(cls, options: LoadOptions) -> "Pipeline":
        """Load every component from ``options.weights_dir``; raise WeightsMissing / LicenceRefused."""

    def components(self) -> list[dict[str, Any]]:
        """The loaded components: ``{"id", "file", "licence", "commercial_use"}`` each (for /ready)."""

    def __call__(
        self, params: Any, inputs: Mapping[str, Any], seed: int, progress: Progress | None = None
    ) -> PipelineResult:
        """Run one request. ``params`` is the package's ``Params`` (no media), ``inputs`` the
        decoded media (images as uint8 HWC RGB arrays, audio as ``Audio``), ``seed`` drives every
        random draw; ``progress`` is called at stage boundaries and may raise Cancelled."""
