"""Fake pipelines for the server tests only: registered by patching pipelines.registry.PIPELINES.

They honour the pipeline interface (pipelines/base.py) and misbehave on request, so the tests
can drive every server path: a black image means "no face", a prompt "sleep:<s>" sleeps,
"hang-once:<file>" hangs on its first run only, "crash" raises, "oom" raises a CUDA
out-of-memory error.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from pipelines.base import Audio, InputError, LoadOptions, PipelineResult, WeightsMissing

CALLS: dict[str, dict] = {}
FREED: list[str] = []
RUNNING = threading.Event()  # set while a fake pipeline is inside __call__

FAKE_MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 32


class OutOfMemoryError(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError, which the server recognises by name."""


class FakePipeline:
    name = "fake"
    media: tuple[str, ...] = ()

    def __init__(self, options: LoadOptions):
        self.options = options

    @classmethod
    def load(cls, options: LoadOptions):
        marker = options.weights_dir / f"{cls.name}.fake"
        if not marker.exists():
            raise WeightsMissing(cls.name, [marker.name])
        return cls(options)

    def components(self):
        return [{"id": f"{self.name}-net", "file": f"{self.name}.fake", "licence": "MIT", "commercial_use": True}]

    def free_memory(self):
        FREED.append(self.name)

    def __call__(self, params, inputs, seed):
        CALLS[self.name] = {"params": dict(params), "inputs": inputs, "seed": seed}
        RUNNING.set()
        try:
            return self.run(params, inputs, seed)
        finally:
            RUNNING.clear()

    def run(self, params, inputs, seed):
        prompt = str(params.get("prompt", ""))
        if prompt.startswith("sleep:"):
            time.sleep(float(prompt.split(":", 1)[1]))
        elif prompt.startswith("hang-once:"):  # the first run hangs (to be killed), later ones pass
            marker = Path(prompt.split(":", 1)[1])
            if not marker.exists():
                marker.write_text("ran")
                time.sleep(60)
        elif prompt == "crash":
            raise RuntimeError("kaboom in layer 3\nTraceback (most recent call last): secret")
        elif prompt == "oom":
            raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        for field in self.media:
            image = inputs[field]
            if isinstance(image, np.ndarray) and image.max() < 8:
                raise InputError(f"No face detected in {field}")
        return PipelineResult(images=[self.picture(seed + i) for i in range(self.count(params))])

    def count(self, params) -> int:
        return 1

    def picture(self, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return rng.integers(0, 256, size=(16, 24, 3), dtype=np.uint8)


class FakeExpressionEditor(FakePipeline):
    name = "expression-editor"
    media = ("image",)


class FakeFaceSwap(FakePipeline):
    name = "faceswap-v4"
    media = ("source_image", "target_image")


class FakeSticker(FakePipeline):
    name = "face-to-sticker"
    media = ("image",)

    def picture(self, seed: int) -> np.ndarray:
        rgb = super().picture(seed)
        alpha = np.full(rgb.shape[:2] + (1,), 128, dtype=np.uint8)
        return np.concatenate([rgb, alpha], axis=2)


class FakeCharacter(FakePipeline):
    name = "consistent-character"
    media = ("subject",)

    def count(self, params) -> int:
        return params["number_of_outputs"] * params["number_of_images_per_pose"]


class FakeSadTalker(FakePipeline):
    name = "sadtalker"
    media = ("input_image",)

    def run(self, params, inputs, seed):
        super().run(params, inputs, seed)
        audio = inputs["input_audio"]
        assert isinstance(audio, Audio) and audio.sample_rate == 16000
        return PipelineResult(video=FAKE_MP4 + seed.to_bytes(8, "little"))


REGISTRY = {
    "expression-editor": "tests.server.fake_pipeline:FakeExpressionEditor",
    "faceswap-v4": "tests.server.fake_pipeline:FakeFaceSwap",
    "face-to-sticker": "tests.server.fake_pipeline:FakeSticker",
    "consistent-character": "tests.server.fake_pipeline:FakeCharacter",
    "sadtalker": "tests.server.fake_pipeline:FakeSadTalker",
}


def install() -> None:
    """Point the registry at the fakes (process-wide; used by conftest and fake_server)."""
    from pipelines import registry

    registry.PIPELINES.update(REGISTRY)


def write_markers(weights_dir, slugs=tuple(REGISTRY)) -> None:
    weights_dir.mkdir(parents=True, exist_ok=True)
    for slug in slugs:
        (weights_dir / f"{slug}.fake").write_text("fake")
