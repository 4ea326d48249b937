"""face-to-sticker on the tiny profile, called as scripts/bench.py and the server call it:
loaded from a weights directory, run with ``Params``."""
from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

from pipelines.base import InputError, LicenceRefused, LoadOptions, WeightsMissing
from pipelines.sticker.params import Params
from pipelines.sticker.pipeline import FaceToStickerPipeline
from pipelines.weights.manifest import load_manifest

from .conftest import NO_FACE, face_photo

PHOTO = face_photo()
BASE = Params(prompt="a person", negative_prompt="", steps=3, width=256, height=256, upscale=False,
              upscale_steps=10, prompt_strength=7, ip_adapter_noise=0.5, ip_adapter_weight=0.2,
              instant_id_strength=1)


@pytest.fixture(scope="module")
def sticker(tiny_weights):
    return FaceToStickerPipeline.load(LoadOptions(tiny_weights, allow_noncommercial=True))


def test_non_commercial_components_are_refused_by_name(tiny_weights):
    with pytest.raises(LicenceRefused) as err:
        FaceToStickerPipeline.load(LoadOptions(tiny_weights))
    for component in ("insightface.antelopev2.glintr100", "instantid.ip_adapter", "rmbg_1.4"):
        assert component in str(err.value)


def test_rgba_sticker_with_stage_timings(sticker):
    result = sticker(BASE, {"image": PHOTO}, seed=11)
    (image,) = result.images
    assert image.shape == (256, 256, 4) and image.dtype == np.uint8
    timings = result.info["timings"]
    for stage in ("detect", "embed", "encode_prompt", "denoise", "decode", "remove_background"):
        assert timings[stage] >= 0, stage


def test_seed_reproduces_and_prompt_strength_is_the_cfg_scale(sticker):
    first = sticker(BASE, {"image": PHOTO}, seed=5).images[0].astype(int)
    again = sticker(BASE, {"image": PHOTO}, seed=5).images[0].astype(int)
    other_seed = sticker(BASE, {"image": PHOTO}, seed=6).images[0].astype(int)
    weaker = sticker(dataclasses.replace(BASE, prompt_strength=2), {"image": PHOTO}, seed=5).images[0].astype(int)
    assert np.abs(first - again).max() <= 1
    assert np.abs(first - other_seed).mean() > 1.0
    assert np.abs(first - weaker).mean() > 1.0


def test_no_face_is_an_input_error(sticker):
    with pytest.raises(InputError, match="^No face detected in image$"):
        sticker(BASE, {"image": NO_FACE}, seed=1)


def test_output_size_snaps_to_the_latent_grid(sticker):
    result = sticker(dataclasses.replace(BASE, width=260, height=300, steps=1), {"image": PHOTO}, seed=2)
    assert result.images[0].shape == (296, 256, 4)


def test_controlnets_and_plus_face_follow_comfyui_sigma_gates(sticker):
    """At 20 Karras steps the depth ControlNet runs 11 steps (σ ≥ σ(0.7)) and plus-face 5 (§2.2)."""
    sdxl = sticker.c.sdxl
    calls = {"identitynet": 0, "depth": 0}
    contexts = set()
    plus_face_scales = []

    def counting(model, name):
        original = model.forward

        def forward(*args, **kwargs):
            calls[name] += 1
            contexts.add(tuple(kwargs["encoder_hidden_states"].shape[:2]))
            return original(*args, **kwargs)
        return forward

    originals = (sdxl.identitynet.forward, sticker.c.depth_controlnet.forward, sdxl.pipe.set_ip_adapter_scale)
    sdxl.identitynet.forward = counting(sdxl.identitynet, "identitynet")
    sticker.c.depth_controlnet.forward = counting(sticker.c.depth_controlnet, "depth")

    def recording(scales):
        plus_face_scales.append(scales[1])
        originals[2](scales)
    sdxl.pipe.set_ip_adapter_scale = recording
    try:
        sticker(dataclasses.replace(BASE, steps=20), {"image": PHOTO}, seed=3)
    finally:
        sdxl.identitynet.forward, sticker.c.depth_controlnet.forward, sdxl.pipe.set_ip_adapter_scale = originals
    assert calls == {"identitynet": 20, "depth": 11}
    # Both ControlNets attend to the 16 InstantID face tokens (uncond, cond), not to the text (§2.2 step 5).
    assert contexts == {(2, 16)}
    assert plus_face_scales == [BASE.ip_adapter_weight, 0.0]


def test_upscale_doubles_the_sticker(sticker):
    result = sticker(dataclasses.replace(BASE, steps=1, upscale=True, upscale_steps=2), {"image": PHOTO}, seed=4)
    assert result.images[0].shape == (512, 512, 4)
    assert result.info["timings"]["upscale"] > 0


def test_missing_upscaler_fails_only_upscale_requests(tiny_weights, tmp_path):
    weights = tmp_path / "weights"
    shutil.copytree(tiny_weights, weights)
    (weights / load_manifest()["upscaler.4x_animesharp"].dest).unlink()
    pipeline = FaceToStickerPipeline.load(LoadOptions(weights, allow_noncommercial=True))
    assert pipeline(dataclasses.replace(BASE, steps=1), {"image": PHOTO}, seed=1).images
    with pytest.raises(WeightsMissing) as err:
        pipeline(dataclasses.replace(BASE, steps=1, upscale=True), {"image": PHOTO}, seed=1)
    assert any("upscaler.4x_animesharp" in item for item in err.value.missing)


def test_licence_clean_background_remover_is_selectable(tiny_weights):
    pipeline = FaceToStickerPipeline.load(LoadOptions(tiny_weights, allow_noncommercial=True,
                                                      background_remover="isnet-general-use"))
    loaded = {c["id"] for c in pipeline.components()}
    assert "isnet_general_use" in loaded and "rmbg_1.4" not in loaded
    image = pipeline(dataclasses.replace(BASE, steps=1), {"image": PHOTO}, seed=1).images[0]
    assert image.shape == (256, 256, 4) and image[..., 3].min() < image[..., 3].max()


def test_detection_retries_at_smaller_sizes_like_the_instantid_node(sticker):
    from pipelines.common.instantid import detect_faces_instantid

    detector = sticker.c.detector
    sizes = []
    real = detector.raw_outputs

    def blind_twice(blob):
        sizes.append(blob.shape[2])
        return real(blob if len(sizes) > 2 else np.full_like(blob, -1.0))

    detector.raw_outputs = blind_twice
    try:
        faces = detect_faces_instantid(detector, np.ascontiguousarray(PHOTO[..., ::-1]))
    finally:
        detector.raw_outputs = real
    assert sizes == [640, 576, 512] and len(faces) == 1


def test_non_square_photo_and_output(sticker):
    photo = face_photo(hw=(480, 320), faces=((160, 240, 20),))
    result = sticker(dataclasses.replace(BASE, steps=1, width=320, height=256), {"image": photo}, seed=9)
    assert result.images[0].shape == (256, 320, 4)
