"""/v1 and /v2 faceswap-v4 over real HTTP, served by uvicorn from the tiny profile."""
from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.server.conftest import HEADERS, b64, png_of, tiny_server, wait_terminal

from .conftest import scene

TARGET_HW = (300, 420)  # a face box of about 63 px: every stage runs
SMALL_HW = (256, 256)  # a 38 px face box: no diffusion (§6.8), for the quick format checks


def png_b64(image: np.ndarray) -> str:
    return b64(png_of(image))


TARGET = scene(TARGET_HW, [(10, 9)], background=(70, 90, 60), skin=(200, 140, 100), seed=1)
SMALL_TARGET = scene(SMALL_HW, [(10, 10)], background=(70, 90, 60), skin=(200, 140, 100), seed=3)
SOURCE = scene((256, 256), [(10, 10)], background=(50, 80, 130), skin=(110, 120, 160), seed=2)
EMPTY = scene((200, 200), [], seed=4)


def serve(tiny_weights, tmp, allow_noncommercial: bool):
    return tiny_server(tiny_weights, tmp, "faceswap-v4", allow_noncommercial=allow_noncommercial,
                       request_timeout_s=120)


@pytest.fixture(scope="module")
def api(tiny_weights, tmp_path_factory):
    with serve(tiny_weights, tmp_path_factory.mktemp("faceswap-api"), allow_noncommercial=True) as server:
        yield server


def post(server, path: str, **fields) -> httpx.Response:
    body = {"source_image": png_b64(SOURCE), "target_image": png_b64(TARGET), "seed": 5, **fields}
    return httpx.post(f"{server.url}{path}", json=body, headers=HEADERS, timeout=120)


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize("swap_type", ["face", "head"])
def test_v1_swaps_and_answers_the_image(api, swap_type):
    response = post(api, "/v1/faceswap-v4", swap_type=swap_type, model_type="speed", style_type="normal")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-weights-profile"] == "tiny" and response.headers["x-seed-value"] == "5"
    image = np.asarray(decoded(response.content))
    assert image.shape == TARGET.shape and np.any(image != TARGET)


@pytest.mark.parametrize("image_format,mime,pil_format", [
    ("png", "image/png", "PNG"), ("jpeg", "image/jpeg", "JPEG"), ("jpg", "image/jpeg", "JPEG"),
    ("webp", "image/webp", "WEBP"),
])
def test_every_image_format(api, image_format, mime, pil_format):
    response = post(api, "/v1/faceswap-v4", target_image=png_b64(SMALL_TARGET), swap_type="face",
                    image_format=image_format, image_quality=80)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == mime
    image = decoded(response.content)
    assert image.format == pil_format and image.size == (SMALL_HW[1], SMALL_HW[0])


def test_base64_answers_json(api):
    response = post(api, "/v1/faceswap-v4", target_image=png_b64(SMALL_TARGET), swap_type="head", base64=True)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"image"}
    assert decoded(base64.b64decode(body["image"])).size == (SMALL_HW[1], SMALL_HW[0])


def test_v2_queue_runs_to_completed(api):
    submit = post(api, "/v2/faceswap-v4", swap_type="head", model_type="quality", style_type="style")
    assert submit.status_code == 200, submit.text
    assert wait_terminal(submit.json()["status_url"], limit=120).json()["status"] == "COMPLETED"
    result = httpx.get(submit.json()["response_url"], headers=HEADERS).json()
    assert result["seed"] == 5 and result["images"][0]["content_type"] == "image/png"
    image = np.asarray(decoded(httpx.get(result["output"]).content))
    assert image.shape == TARGET.shape


@pytest.mark.parametrize("field", ["source_image", "target_image"])
def test_no_face_is_400_naming_the_image(api, field):
    response = post(api, "/v1/faceswap-v4", **{field: png_b64(EMPTY)})
    assert response.status_code == 400
    assert response.json() == {"error": f"No face detected in {field}"}


def test_noncommercial_files_are_refused_unless_allowed(tiny_weights, tmp_path):
    with serve(tiny_weights, tmp_path, allow_noncommercial=False) as server:
        response = post(server, "/v1/faceswap-v4", swap_type="face")
    assert response.status_code == 503
    error = response.json()["error"]
    assert "non-commercial" in error and "inswapper_128" in error
