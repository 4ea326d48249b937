"""consistent-character on the tiny profile, called directly: image counts, per-image progress,
seeded pose order, the safety checker's drops, no-face input, the img2img pass the detailers run."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.base import InputError, LoadOptions
from pipelines.character.params import Params
from pipelines.character.pipeline import ConsistentCharacterPipeline
from pipelines.character.pose_library import choose_poses
from pipelines.character.safety import SafetyChecker
from pipelines.common.instantid import Adapter, instantid_embeds, plus_face_embeds
from tests.sticker.conftest import NO_FACE, face_photo

SUBJECT = face_photo()


def params(**fields) -> Params:
    values = dict(prompt="a photo of a man", negative_prompt="low quality,blur", randomise_poses=True,
                  number_of_outputs=1, number_of_images_per_pose=1)
    return Params(**{**values, **fields})


@pytest.fixture(scope="module")
def pipe(tiny_weights):
    return ConsistentCharacterPipeline.load(LoadOptions(weights_dir=tiny_weights, allow_noncommercial=True))


def test_every_image_is_returned_with_progress_after_each(pipe):
    calls = []
    result = pipe(params(number_of_outputs=2, number_of_images_per_pose=2), {"subject": SUBJECT}, 5,
                  progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert len(result.images) == 4
    side = pipe.refine_side
    assert all(image.shape == (side, side, 3) and image.dtype == np.uint8 for image in result.images)
    assert result.info["poses"] == [p.name for p in choose_poses(pipe.poses, 2, True, 5)]
    assert {"generate", "refine", "eye_detailer", "safety_checker"} <= set(result.info["timings"])
    # Two images of one pose share the pose but not the noise.
    assert np.abs(result.images[0].astype(int) - result.images[1].astype(int)).mean() > 1


def test_poses_follow_the_seed_and_the_switch(pipe):
    shuffled = pipe(params(), {"subject": SUBJECT}, 11).info["poses"]
    assert shuffled == [choose_poses(pipe.poses, 1, True, 11)[0].name]
    assert pipe(params(randomise_poses=False), {"subject": SUBJECT}, 11).info["poses"] == [pipe.poses[0].name]


def test_nsfw_images_are_dropped_and_all_nsfw_is_an_input_error(pipe, monkeypatch):
    flags = iter([True, False])
    monkeypatch.setattr(SafetyChecker, "nsfw", lambda self, images: [next(flags) for _ in images])
    result = pipe(params(number_of_images_per_pose=2), {"subject": SUBJECT}, 3)
    assert len(result.images) == 1 and result.info["nsfw_dropped"] == 1
    monkeypatch.setattr(SafetyChecker, "nsfw", lambda self, images: [True for _ in images])
    with pytest.raises(InputError, match="NSFW"):
        pipe(params(), {"subject": SUBJECT}, 3)


def test_no_face_in_subject_is_an_input_error(pipe):
    with pytest.raises(InputError, match="No face detected in subject"):
        pipe(params(), {"subject": NO_FACE}, 1)


def test_img2img_keeps_the_size_and_changes_the_picture(pipe):
    sdxl = pipe.c.sdxl
    prompts = sdxl.prompt_encoder.encode_pair("perfect eyes", "deformed pupils")
    crop = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    adapters = [Adapter(instantid_embeds(np.full(512, 0.5, dtype=np.float32)), 0.8),
                Adapter(plus_face_embeds(sdxl.image_encoder, SUBJECT, noise=0.0), 1.0)]
    out = pipe._img2img(crop, *prompts, adapters, [], 0.35, seed=2)
    assert out.shape == crop.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - crop.astype(int)).mean() > 1
