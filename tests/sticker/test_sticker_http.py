"""/v1 and /v2 face-to-sticker over real HTTP (plain requests and the official segmind SDK),
served by uvicorn from the tiny profile."""
from __future__ import annotations

import io

import numpy as np
import pytest
import requests
from PIL import Image

from tests.server.conftest import HEADERS, KEY, b64, png_of, tiny_server, wait_terminal

from .conftest import NO_FACE, face_photo

PHOTO = face_photo()
SMALL = {"width": 256, "height": 256, "steps": 2}


@pytest.fixture(scope="module")
def api(tiny_weights, tmp_path_factory):
    with tiny_server(tiny_weights, tmp_path_factory.mktemp("sticker-api"), "face-to-sticker",
                     allow_noncommercial=True, request_timeout_s=600) as server:
        yield server


def post(server, path: str = "/v1/face-to-sticker", image=PHOTO, **fields) -> requests.Response:
    body = {"image": b64(png_of(image)), "seed": 7, **fields}
    return requests.post(f"{server.url}{path}", json=body, headers=HEADERS, timeout=600)


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_defaults_answer_a_transparent_1024_png(api):
    response = requests.post(f"{api.url}/v1/face-to-sticker", json={"image": b64(png_of(PHOTO))},
                             headers=HEADERS, timeout=900)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-weights-profile"] == "tiny"
    image = decoded(response.content)
    assert image.mode == "RGBA" and image.size == (1024, 1024)


@pytest.mark.parametrize("fmt,mime,mode", [("png", "image/png", "RGBA"), ("webp", "image/webp", "RGBA"),
                                           ("jpeg", "image/jpeg", "RGB")])
def test_alpha_kept_in_png_and_webp_and_flattened_in_jpeg(api, fmt, mime, mode):
    response = post(api, image_format=fmt, **SMALL)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == mime
    image = decoded(response.content)
    assert image.mode == mode and image.size == (256, 256)
    if mode == "RGBA":
        alpha = np.asarray(image)[..., 3]
        assert alpha.min() < 255, "the background should be (partly) transparent"


def test_same_seed_same_sticker_and_prompt_strength_changes_it(api):
    first = np.asarray(decoded(post(api, prompt_strength=7, **SMALL).content)).astype(int)
    again = np.asarray(decoded(post(api, prompt_strength=7, **SMALL).content)).astype(int)
    weaker = np.asarray(decoded(post(api, prompt_strength=2, **SMALL).content)).astype(int)
    # Same seed, same process: the same computation; a level of slack for encoder rounding only.
    assert np.abs(first - again).max() <= 1
    assert np.abs(first - weaker).mean() > 1.0


def test_no_face_is_a_400(api):
    response = post(api, image=NO_FACE, **SMALL)
    assert response.status_code == 400
    assert response.json()["error"] == "No face detected in image"


@pytest.mark.parametrize("field,low,high", [("width", 256, 2048), ("height", 256, 2048), ("steps", 1, 100),
                                            ("upscale_steps", 1, 100), ("prompt_strength", 0, 30),
                                            ("ip_adapter_noise", 0, 1), ("ip_adapter_weight", 0, 1),
                                            ("instant_id_strength", 0, 1)])
def test_out_of_range_is_a_400_naming_the_field(api, field, low, high):
    for bad in (low - 1, high + 1):
        response = post(api, **{**SMALL, field: bad})
        assert response.status_code == 400, (field, bad)
        assert field in response.json()["error"]


@pytest.mark.parametrize("field,value", [("prompt_strength", 0), ("prompt_strength", 30), ("ip_adapter_noise", 0),
                                         ("ip_adapter_noise", 1), ("ip_adapter_weight", 0), ("ip_adapter_weight", 1),
                                         ("instant_id_strength", 0), ("instant_id_strength", 1), ("steps", 1)])
def test_range_ends_run(api, field, value):
    response = post(api, **{**SMALL, field: value})
    assert response.status_code == 200, (field, value, response.text)


def test_size_range_ends_run(api):
    for width, height in ((256, 264), (2048, 256)):
        response = post(api, width=width, height=height, steps=1)
        assert response.status_code == 200, response.text
        assert decoded(response.content).size == (width, height)


def test_v2_queue(api):
    submit = post(api, "/v2/face-to-sticker", **SMALL)
    assert submit.status_code == 200, submit.text
    status = wait_terminal(submit.json()["status_url"], limit=300)
    assert status.json()["status"] == "COMPLETED", status.text
    result = requests.get(submit.json()["response_url"], headers=HEADERS, timeout=60).json()
    image_url = result["images"][0]["url"]
    image = decoded(requests.get(image_url, timeout=60).content)
    assert image.mode == "RGBA" and image.size == (256, 256)


def test_segmind_sdk_v1_and_v2(api):
    from segmind import SegmindClient

    client = SegmindClient(api_key=KEY, base_url=f"{api.url}/v1", timeout=600)
    fields = {"image": b64(png_of(PHOTO)), "seed": 3, **SMALL}
    png = client.run_sync("face-to-sticker", **fields).content
    assert decoded(png).mode == "RGBA"
    result = client.run("face-to-sticker", **fields)
    assert result["output"]


def test_upscale_doubles_the_sticker(api):
    response = post(api, upscale=True, upscale_steps=1, width=256, height=256, steps=1)
    assert response.status_code == 200, response.text
    image = decoded(response.content)
    assert image.mode == "RGBA" and image.size == (512, 512)
