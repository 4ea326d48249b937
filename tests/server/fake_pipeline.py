"""Fake pipelines for the server tests only: registered by patching pipelines.registry (PIPELINES,
BUILT and params_class).

They honour the pipeline interface (pipelines/base.py) and misbehave on request, so the tests
can drive every server path: a ``<slug>.slow-load`` file next to the weights markers makes the load
take that many seconds, a black image means "no face", a prompt "sleep:<s>" sleeps (calling
``progress`` every 0.05 s), "hang-once:<file>" hangs on its first run only, "crash" raises,
"oom" raises a CUDA out-of-memory error. The built endpoints use their real ``Params``; the
others get stand-ins with the fields these fakes read.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.base import Audio, InputError, LoadOptions, PipelineResult, WeightsMissing, report_progress
from pipelines.expression_editor.params import Params as ExpressionEditorParams
from pipelines.faceswap.params import Params as FaceSwapParams
from pipelines.sadtalker.params import Params as SadTalkerParams

CALLS: dict[str, dict] = {}
FREED: list[str] = []
RUNNING = threading.Event()  # set while a fake pipeline is inside __call__

FAKE_MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 32


@dataclass(frozen=True)
class StickerParams:
    prompt: str


@dataclass(frozen=True)
class CharacterParams:
    prompt: str
    number_of_outputs: int
    number_of_images_per_pose: int


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
        slow = options.weights_dir / f"{cls.name}.slow-load"  # seconds the load takes
        if slow.exists():
            time.sleep(float(slow.read_text()))
        return cls(options)

    def components(self):
        return [{"id": f"{self.name}-net", "file": f"{self.name}.fake", "licence": "MIT", "commercial_use": True}]

    def free_memory(self):
        FREED.append(self.name)

    def __call__(self, params, inputs, seed, progress=None):
        CALLS[self.name] = {"params": params, "inputs": inputs, "seed": seed}
        RUNNING.set()
        try:
            return self.run(params, inputs, seed, progress)
        finally:
            RUNNING.clear()

    def run(self, params, inputs, seed, progress=None):
        prompt = getattr(params, "prompt", "")
        if prompt.startswith("sleep:"):
            steps = max(1, round(float(prompt.split(":", 1)[1]) / 0.05))
            for step in range(steps):
                time.sleep(0.05)
                report_progress(progress, step + 1, steps)
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
        return params.number_of_outputs * params.number_of_images_per_pose


class FakeSadTalker(FakePipeline):
    name = "sadtalker"
    media = ("input_image",)

    def run(self, params, inputs, seed, progress=None):
        super().run(params, inputs, seed, progress)
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


PARAMS = {
    "expression-editor": ExpressionEditorParams,
    "faceswap-v4": FaceSwapParams,
    "face-to-sticker": StickerParams,
    "consistent-character": CharacterParams,
    "sadtalker": SadTalkerParams,
}


def params_class(slug: str) -> type:
    return PARAMS[slug]


def install() -> None:
    """Point the registry at the fakes, every one built (process-wide; used by fake_server)."""
    from pipelines import registry

    registry.PIPELINES.update(REGISTRY)
    registry.BUILT.update(dict.fromkeys(REGISTRY, True))
    registry.params_class = params_class


def write_markers(weights_dir, slugs=tuple(REGISTRY)) -> None:
    weights_dir.mkdir(parents=True, exist_ok=True)
    for slug in slugs:
        (weights_dir / f"{slug}.fake").write_text("fake")
