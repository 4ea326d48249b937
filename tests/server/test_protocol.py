"""Request models (names, ranges, defaults, coercion) and output encoding."""
from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from server.outputs import OutputFile, OutputStore, encode_image, flatten_on_white
from server.protocol import (
    ENDPOINTS,
    ConsistentCharacterRequest,
    ExpressionEditorRequest,
    FaceSwapRequest,
    FaceToStickerRequest,
    SadTalkerRequest,
    describe_validation_error,
)

DEFAULTS = {
    ExpressionEditorRequest: ({"image": "x"}, {"aaa": 0, "smile": 0, "sample_parts": "OnlyExpression",
                                               "image_format": "png", "image_quality": 95,
                                               "ref_expression_image": None}),
    FaceToStickerRequest: ({"image": "x"}, {"prompt": "a person", "negative_prompt": "", "steps": 20, "width": 1024,
                                            "height": 1024, "seed": None, "upscale": False, "upscale_steps": 10,
                                            "prompt_strength": 7, "ip_adapter_noise": 0.5, "ip_adapter_weight": 0.2,
                                            "instant_id_strength": 1}),
    FaceSwapRequest: ({"source_image": "x", "target_image": "y"}, {
        "model_type": "speed", "swap_type": "head", "style_type": "normal", "seed": 42, "image_format": "png",
        "image_quality": 90, "hardware": "fast", "base64": False}),
    ConsistentCharacterRequest: ({"subject": "x"}, {"negative_prompt": "low quality,blur", "output_format": "webp",
                                                    "output_quality": 80, "randomise_poses": True,
                                                    "number_of_outputs": 1, "number_of_images_per_pose": 1}),
    SadTalkerRequest: ({"input_image": "x", "input_audio": "y"}, {
        "pose_style": 4, "expression_scale": 1.4, "preprocess": "full", "image_size": 256, "enhancer": True,
        "base64": False}),
}


@pytest.mark.parametrize("model", list(DEFAULTS))
def test_defaults_match_the_model_pages(model):
    given, expected = DEFAULTS[model]
    dumped = model.model_validate(given).model_dump()
    assert {k: dumped[k] for k in expected} == expected


@pytest.mark.parametrize(("model", "field", "low", "high"), [
    (ExpressionEditorRequest, "aaa", -30, 30), (ExpressionEditorRequest, "blink", -20, 5),
    (ExpressionEditorRequest, "smile", -0.3, 1.3), (ExpressionEditorRequest, "wink", 0, 25),
    (ExpressionEditorRequest, "rotate_yaw", -20, 20), (ExpressionEditorRequest, "image_quality", 10, 100),
    (FaceToStickerRequest, "ip_adapter_noise", 0, 1), (FaceSwapRequest, "image_quality", 10, 100),
    (ConsistentCharacterRequest, "number_of_outputs", 1, 20), (ConsistentCharacterRequest, "output_quality", 0, 100),
    (SadTalkerRequest, "pose_style", 0, 45), (SadTalkerRequest, "expression_scale", 1, 3),
])
def test_ranges_are_inclusive_and_enforced(model, field, low, high):
    given = DEFAULTS[model][0]
    assert getattr(model.model_validate({**given, field: low}), field) == low
    assert getattr(model.model_validate({**given, field: str(high)}), field) == high
    step = 0.1 if isinstance(low, float) or isinstance(high, float) else 1
    with pytest.raises(ValidationError) as caught:
        model.model_validate({**given, field: high + step})
    assert f"{field} must be" in describe_validation_error(model, caught.value)
    assert f"between {low} and {high}" in describe_validation_error(model, caught.value)


def test_lenient_values():
    swap = FaceSwapRequest.model_validate({"source_image": "a", "target_image": "b", "image_format": "JPG",
                                           "base64": "true", "seed": "98877465625", "extra": 1})
    assert swap.image_format == "jpeg" and swap.base64 is True and swap.seed == 98877465625
    assert SadTalkerRequest.model_validate({"input_image": "a", "input_audio": "b", "image_size": "512"}).image_size == 512
    with pytest.raises(ValidationError):
        SadTalkerRequest.model_validate({"input_image": "a", "input_audio": "b", "image_size": 384})


def test_seed_choice():
    assert FaceSwapRequest.model_validate({"source_image": "a", "target_image": "b"}).chosen_seed() == 42
    for seed in (0, -1, None):
        body = {"subject": "a"} if seed is None else {"subject": "a", "seed": seed}
        drawn = {ConsistentCharacterRequest.model_validate(body).chosen_seed() for _ in range(5)}
        assert len(drawn) > 1 and all(0 <= s < 2**32 for s in drawn)
    assert FaceToStickerRequest.model_validate({"image": "a", "seed": 0}).chosen_seed() == 0


def test_media_fields_and_outputs():
    assert set(ENDPOINTS["sadtalker"].media_fields) == {"input_image", "input_audio"}
    assert ENDPOINTS["sadtalker"].media_fields["input_audio"].kind == "audio"
    assert set(ENDPOINTS["expression-editor"].media_fields) == {"image", "ref_expression_image"}
    character = ConsistentCharacterRequest.model_validate({"subject": "a", "output_format": "jpg",
                                                           "output_quality": 5})
    endpoint = ENDPOINTS["consistent-character"]
    assert endpoint.output_format(character) == "jpeg" and endpoint.output_quality(character) == 5


def test_encoding_keeps_alpha_where_the_format_can():
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 0
    assert Image.open(io.BytesIO(encode_image(rgba, "png", 95))).mode == "RGBA"
    assert Image.open(io.BytesIO(encode_image(rgba, "webp", 80))).mode == "RGBA"
    jpeg = Image.open(io.BytesIO(encode_image(rgba, "jpeg", 95)))
    assert jpeg.mode == "RGB" and min(jpeg.getpixel((2, 2))) > 245  # transparent → white
    half = np.array([[[0, 0, 0, 128]]], dtype=np.uint8)
    assert tuple(flatten_on_white(half)[0, 0]) == (127, 127, 127)


def test_output_store_expiry(tmp_path):
    store = OutputStore(tmp_path, ttl_s=10)
    name = store.save(OutputFile(b"png", "image/png", "png"))
    assert store.path(name) is not None and store.path("../" + name) is None
    assert store.sweep(now=time.time() + 11) == 1 and store.path(name) is None
