"""The official clients against a real server: segmind 1.3.0 (v1 and the v2 queue) and the
old segmindapi 0.3.0 (segmind-api.md §7)."""
from __future__ import annotations

import base64
import io
import json

import httpx
import pytest
import requests
import segmind
from PIL import Image
from segmind import SegmindClient
from segmind.exceptions import SegmindError
from segmind.v2 import InferenceFailed

from tests.server.conftest import BLACK, FACE, KEY, b64, running
from tests.server.fake_pipeline import FAKE_MP4


def payloads(origin: str) -> dict[str, dict]:
    """One request per endpoint, mixing the three media forms real clients send."""
    return {
        "expression-editor": {"image": f"{origin}/face.png", "smile": 1, "image_format": "jpg"},
        "face-to-sticker": {"image": b64(FACE), "prompt": "a person", "seed": 411},
        "faceswap-v4": {"source_image": "data:image/png;base64," + b64(FACE), "target_image": f"{origin}/face.png",
                        "model_type": "speed", "swap_type": "head", "style_type": "normal", "seed": 4208875,
                        "image_format": "png", "image_quality": 90, "hardware": "fast", "base64": False},
        "consistent-character": {"subject": f"{origin}/face.png", "seed": 42, "number_of_outputs": 2},
        "sadtalker": {"input_image": f"{origin}/face.png", "input_audio": f"{origin}/voice.wav",
                      "image_size": "256", "base64": False},
    }


EXPECTED_TYPE = {"expression-editor": "image/jpeg", "face-to-sticker": "image/png", "faceswap-v4": "image/png",
                 "consistent-character": "image/webp", "sadtalker": "video/mp4"}


@pytest.fixture(scope="module")
def client(api):
    return SegmindClient(api_key=KEY, base_url=f"{api.url}/v1", timeout=30)


@pytest.mark.parametrize("slug", list(EXPECTED_TYPE))
def test_run_sync_returns_raw_bytes_and_accounting_headers(client, origin, slug):
    response = client.run_sync(slug, **payloads(origin)[slug])
    assert response.status_code == 200
    assert response.headers["content-type"] == EXPECTED_TYPE[slug]
    for header in ("x-request-id", "X-remaining-credits", "X-generation-time", "x-seed-value", "x-cost"):
        assert header in response.headers
    if slug == "sadtalker":
        assert response.content.startswith(FAKE_MP4)
    else:
        Image.open(io.BytesIO(response.content)).verify()


def test_run_sync_echoes_the_given_seed(client, origin):
    response = client.run_sync("faceswap-v4", **payloads(origin)["faceswap-v4"])
    assert response.headers["x-seed-value"] == "4208875"


def test_run_sync_base64_returns_only_image_key(client, origin):
    body = dict(payloads(origin)["faceswap-v4"], base64=True)
    response = client.run_sync("faceswap-v4", **body)
    assert response.headers["content-type"] == "application/json"
    data = response.json()
    assert list(data) == ["image"]
    Image.open(io.BytesIO(base64.b64decode(data["image"]))).verify()


def test_sadtalker_base64_returns_video_key(client, origin):
    response = client.run_sync("sadtalker", **dict(payloads(origin)["sadtalker"], base64="true"))
    assert list(response.json()) == ["video"]
    assert base64.b64decode(response.json()["video"]).startswith(FAKE_MP4)


@pytest.mark.parametrize("slug", list(EXPECTED_TYPE))
def test_run_goes_through_the_v2_queue(client, origin, slug):
    result = client.run(slug, **payloads(origin)[slug])
    assert result["status"] == "COMPLETED"
    assert result["output"].startswith("http://127.0.0.1:")
    metrics = result["metrics"]
    assert {"inference_time", "queue_time", "total_time", "cost", "remaining_credits"} <= set(metrics)
    if slug == "sadtalker":
        assert result["video"]["url"] == result["output"]
        assert httpx.get(result["output"]).content.startswith(FAKE_MP4)
        return
    images = result["images"]
    assert images[0]["url"] == result["output"]
    ext = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}[EXPECTED_TYPE[slug]]
    assert images[0]["file_name"] == f"{result['request_id']}.{ext}"
    assert images[0]["content_type"] == EXPECTED_TYPE[slug]
    fetched = httpx.get(images[0]["url"])
    assert fetched.status_code == 200 and len(fetched.content) == images[0]["file_size"]
    if slug == "consistent-character":
        assert len(images) == 2


def test_submit_async_then_wait(client, origin):
    job = client.submit_async("faceswap-v4", **payloads(origin)["faceswap-v4"])
    for url in (job.status_url, job.response_url, job.submit_response["poll_url"]):
        assert url.startswith("http://127.0.0.1:")  # absolute, or the SDK would 404 under /v1
    result = job.wait(timeout=30, interval=0.2)
    assert result["status"] == "COMPLETED" and result["request_id"] == job.request_id


def test_failed_v2_job_raises_inference_failed(client, origin):
    body = dict(payloads(origin)["faceswap-v4"], source_image=b64(BLACK))
    with pytest.raises(InferenceFailed) as caught:
        client.run("faceswap-v4", **body)
    assert caught.value.detail == "No face detected in source_image"


def test_no_key_is_401(api, origin):
    anonymous = SegmindClient(api_key="", base_url=f"{api.url}/v1")
    anonymous._client.headers.pop("x-api-key", None)
    with pytest.raises(SegmindError) as caught:
        anonymous.run_sync("faceswap-v4", **payloads(origin)["faceswap-v4"])
    assert caught.value.status == 401
    assert caught.value.detail == "Missing Authorization or x-api-key in header"


def test_insufficient_credits_is_406(tmp_path, origin):
    with running(tmp_path, key_credits=0.5) as server:
        poor = SegmindClient(api_key=KEY, base_url=f"{server.url}/v1")
        with pytest.raises(SegmindError) as caught:
            poor.run_sync("faceswap-v4", **payloads(origin)["faceswap-v4"])
    assert caught.value.status == 406 and caught.value.detail == "Insufficient credits"


def test_unknown_slug_is_404(client):
    with pytest.raises(SegmindError) as caught:
        client.run_sync("flux-schnell", prompt="x")
    assert caught.value.status == 404 and caught.value.detail == "Model flux-schnell not found"


def test_module_level_client(api, origin, monkeypatch):
    monkeypatch.setattr(segmind, "_default_client", SegmindClient(api_key=KEY, base_url=f"{api.url}/v1"))
    response = segmind.run_sync("faceswap-v4", **payloads(origin)["faceswap-v4"])
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"


def test_segmindapi_faceswap_with_requests_redirected(api, origin, monkeypatch):
    """segmindapi hard-codes api.segmind.com and an older faceswap model; the patched
    requests.post points it here and maps that model's field names onto faceswap-v4's."""
    from segmindapi import FaceSwap

    real_post = requests.post
    renamed = {"input_face_image": "source_image", "target_face_image": "target_image", "file_type": "image_format"}

    def redirected(url, json=None, **kwargs):
        assert url == "https://api.segmind.com/v1/sd2.1-faceswapper"
        body = {renamed.get(k, k): v for k, v in json.items()}
        return real_post(f"{api.url}/v1/faceswap-v4", json=body, **kwargs)

    monkeypatch.setattr(requests, "post", redirected)
    image = FaceSwap(api_key=KEY).generate(f"{origin}/face.png", f"{origin}/face.png", file_type="png")
    assert image.size == (24, 16)


@pytest.mark.parametrize("slug", list(EXPECTED_TYPE))
def test_seed_page_requests_snippet(api, origin, slug):
    """The model page's snippet with the URL swapped (image URLs point at the local origin)."""
    response = requests.post(f"{api.url}/v1/{slug}", headers={"x-api-key": KEY, "Content-Type": "application/json"},
                             data=json.dumps(payloads(origin)[slug]))
    assert response.status_code == 200
    assert float(response.headers["X-remaining-credits"]) > 0
