"""/v1/expression-editor over real HTTP on the tiny profile, with the scikit-image astronaut.

One uvicorn for the module, serving the tiny checkpoints through the production loaders; the tiny
face detector fires predictably (pipelines/common/tiny_yolo.py), so every request goes
the whole way: detection, crop, the five networks, paste-back and encoding.
"""
from __future__ import annotations

import base64
import functools
import http.server
import io

import httpx
import numpy as np
import pytest
from PIL import Image
from skimage.data import astronaut

from tests.server.conftest import b64, local_origin, png_of, tiny_server, wait_terminal
from tests.torch_threads import one_torch_thread

SLUG = "expression-editor"

# The example request of Segmind's expression-editor page (shared/specs/segmind-pages), with
# the image to be filled in.
SEED_EXAMPLE = {
    "aaa": 0, "blink": 0, "eee": 0, "eyebrow": 0, "image_format": "png", "image_quality": 95,
    "pupil_x": 0, "pupil_y": 0, "rotate_pitch": 0, "rotate_roll": 0, "rotate_yaw": 0,
    "sample_parts": "OnlyExpression", "smile": 1, "wink": 0, "woo": 0,
}

# Segmind's documented slider ranges (the model page), written out here so that they also check
# the protocol model.
SLIDER_RANGES = {
    "aaa": (-30, 30), "blink": (-20, 5), "eee": (-15, 15), "eyebrow": (-10, 10),
    "pupil_x": (-15, 15), "pupil_y": (-15, 15), "rotate_pitch": (-20, 20), "rotate_roll": (-20, 20),
    "rotate_yaw": (-20, 20), "smile": (-0.3, 1.3), "wink": (0, 25), "woo": (-15, 15),
}
SAMPLE_PARTS = ("OnlyExpression", "OnlyRotation", "OnlyMouth", "OnlyEyes", "All")

# The tiny detector's box on the astronaut (top-row anchor nearest the centre: x 166.4–371.2,
# y 0–115.2) widened by crop_factor 1.7 and shifted inside the image (spec §4.2).
ASTRONAUT_CROP = (93, 0, 442, 348)


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


ASTRONAUT = astronaut()
ASTRONAUT_PNG = png_of(ASTRONAUT)
# The mirrored astronaut: a reference face whose pose and expression differ from the source's.
MIRRORED_B64 = b64(png_of(np.ascontiguousarray(ASTRONAUT[:, ::-1])))
# All black and square: no grey letterbox, so every feature of the tiny detector is zero.
BLANK_B64 = b64(png_of(np.zeros((96, 96, 3), np.uint8)))


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    """A local http server holding the astronaut, for the URL form of the image field."""
    folder = tmp_path_factory.mktemp("origin")
    (folder / "astronaut.png").write_bytes(ASTRONAUT_PNG)
    with local_origin(functools.partial(QuietFiles, directory=str(folder))) as url:
        yield url


class QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(tiny_weights, tmp_path_factory):
    with one_torch_thread(), tiny_server(tiny_weights, tmp_path_factory.mktemp("expression_http"), SLUG,
                                         no_auth=True, fetch_allow=["127.0.0.1/32"], request_timeout_s=120) as running:
        yield running


def post(server, body: dict, path: str = f"/v1/{SLUG}") -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=120)


def edit(server, **changes) -> httpx.Response:
    return post(server, {**SEED_EXAMPLE, "image": b64(ASTRONAUT_PNG), **changes})


def edited(server, **changes) -> np.ndarray:
    response = edit(server, **changes)
    assert response.status_code == 200, response.text
    return pixels(response.content)


@pytest.fixture(scope="module")
def seed_response(server) -> httpx.Response:
    return edit(server)


@pytest.fixture(scope="module")
def neutral(server) -> np.ndarray:
    """Every slider at 0: still not the source (spec §4.8), but the baseline of each slider."""
    return edited(server, smile=0)


def outside(image: np.ndarray, region=ASTRONAUT_CROP) -> np.ndarray:
    x1, y1, x2, y2 = region
    out = image.copy()
    out[y1:y2, x1:x2] = 0
    return out


# -- the seed's example request -----------------------------------------------------------------


def test_seed_example_with_base64(seed_response):
    assert seed_response.status_code == 200, seed_response.text
    assert seed_response.headers["content-type"] == "image/png"
    assert seed_response.headers["x-weights-profile"] == "tiny"
    out = pixels(seed_response.content)
    assert out.shape == ASTRONAUT.shape
    # Pasted back: the source outside the face crop, the edited face inside it (spec §4.11).
    assert np.array_equal(outside(out), outside(ASTRONAUT))
    x1, y1, x2, y2 = ASTRONAUT_CROP
    assert not np.array_equal(out[y1:y2, x1:x2], ASTRONAUT[y1:y2, x1:x2])


def test_same_request_gives_the_same_bytes(server, seed_response):
    assert edit(server).content == seed_response.content


def test_seed_example_with_a_data_uri(server, seed_response):
    response = edit(server, image="data:image/png;base64," + b64(ASTRONAUT_PNG))
    assert response.status_code == 200, response.text
    assert response.content == seed_response.content


def test_seed_example_with_a_url(server, origin, seed_response):
    response = edit(server, image=f"{origin}/astronaut.png")
    assert response.status_code == 200, response.text
    assert response.headers["x-weights-profile"] == "tiny"
    assert response.content == seed_response.content


# -- sliders, reference image, outputs ---------------------------------------------------------


@pytest.mark.parametrize("end", ["min", "max"])
@pytest.mark.parametrize("slider", sorted(SLIDER_RANGES))
def test_every_slider_at_both_ends(server, neutral, slider, end):
    value = SLIDER_RANGES[slider][0 if end == "min" else 1]
    out = edited(server, **{"smile": 0, slider: value})
    assert out.shape == ASTRONAUT.shape
    assert np.array_equal(outside(out), outside(ASTRONAUT))
    # 0 is wink's minimum and the default: no edit. Every other end moves keypoints (spec §4.7).
    assert np.array_equal(out, neutral) == (value == 0)


def test_sample_parts_without_reference_change_nothing(server, neutral):
    assert np.array_equal(edited(server, smile=0, sample_parts="All"), neutral)


def test_every_sample_part_with_a_reference_image(server, neutral):
    outputs = {parts: edited(server, smile=0, sample_parts=parts, ref_expression_image=MIRRORED_B64)
               for parts in SAMPLE_PARTS}
    for parts, out in outputs.items():
        assert out.shape == ASTRONAUT.shape
        assert not np.array_equal(out, neutral), parts
    # Each part takes a different piece of the reference's expression and pose (spec §4.5).
    distinct = {out.tobytes() for out in outputs.values()}
    assert len(distinct) == len(SAMPLE_PARTS)


def test_crop_output_is_the_512_crop(server):
    upper = b64(png_of(np.ascontiguousarray(ASTRONAUT[:400])))
    full = edit(server, image=upper)
    crop = edit(server, image=upper, output="crop")
    assert full.status_code == crop.status_code == 200, (full.text, crop.text)
    assert pixels(full.content).shape == (400, 512, 3)
    assert pixels(crop.content).shape == (512, 512, 3)


@pytest.mark.parametrize("fmt, quality, mime", [
    ("png", 10, "image/png"), ("jpg", 95, "image/jpeg"), ("jpeg", 20, "image/jpeg"),
    ("webp", 60, "image/webp"),
])
def test_image_format_and_quality(server, seed_response, fmt, quality, mime):
    response = edit(server, image_format=fmt, image_quality=quality)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == mime
    with Image.open(io.BytesIO(response.content)) as image:
        assert image.format == {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}[mime]
        assert image.size == (512, 512)
        if fmt == "png":
            # Quality applies to jpg/webp only (spec §4.12).
            assert response.content == seed_response.content
        else:
            # Lossy, but the same picture (a different one is ~50 levels off on average).
            difference = np.abs(np.asarray(image.convert("RGB"), np.int16) - pixels(seed_response.content))
            assert difference.mean() < 12


def test_jpeg_quality_sets_the_compression(server):
    small, large = (edit(server, image_format="jpg", image_quality=q) for q in (10, 100))
    assert len(small.content) < len(large.content) / 2


def test_base64_true_answers_json(server, seed_response):
    response = edit(server, base64=True)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["image"]
    assert base64.b64decode(body["image"]) == seed_response.content


def test_v2_queue_gives_the_v1_bytes(server, seed_response):
    submitted = post(server, {**SEED_EXAMPLE, "image": b64(ASTRONAUT_PNG)}, path=f"/v2/{SLUG}")
    assert submitted.status_code == 200, submitted.text
    queued = submitted.json()
    assert queued["status"] == "QUEUED"
    assert wait_terminal(queued["status_url"], limit=60).json()["status"] == "COMPLETED"
    result = httpx.get(queued["response_url"]).json()
    assert result["images"][0]["content_type"] == "image/png"
    assert httpx.get(result["output"]).content == seed_response.content


# -- bad inputs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("slider, value", [("smile", 1.5), ("wink", -1), ("aaa", 31), ("blink", 6)])
def test_out_of_range_slider_is_400_naming_field_and_range(server, slider, value):
    response = edit(server, **{slider: value})
    assert response.status_code == 400
    low, high = SLIDER_RANGES[slider]
    message = response.json()["error"]
    assert message.startswith(f"{slider} must be") and f"between {low} and {high}" in message, message


def test_unknown_sample_parts_is_400(server):
    response = edit(server, sample_parts="OnlyNose", ref_expression_image=MIRRORED_B64)
    assert response.status_code == 400
    message = response.json()["error"]
    assert "sample_parts" in message and all(parts in message for parts in SAMPLE_PARTS), message


def test_an_image_that_is_not_an_image_is_400(server):
    response = edit(server, image=b64(b"these bytes are text, not a picture"))
    assert response.status_code == 400
    assert response.json()["error"].startswith("image ")


def test_blank_image_has_no_face(server):
    response = edit(server, image=BLANK_B64)
    assert response.status_code == 400
    assert response.json() == {"error": "no face detected in image"}


def test_blank_reference_has_no_face(server):
    response = edit(server, ref_expression_image=BLANK_B64, sample_parts="All")
    assert response.status_code == 400
    assert response.json() == {"error": "no face detected in ref_expression_image"}
