"""/v1/sadtalker over real HTTP on the tiny profile: photo + WAV in, H.264 + AAC mp4 out.

The server decodes the audio with ffmpeg (16 kHz mono), the pipeline renders through the tiny
checkpoints, and the answer is checked with ffprobe as a client would play it.
"""
from __future__ import annotations

import base64
import json
import shutil
import subprocess

import httpx
import numpy as np
import pytest
from skimage.data import astronaut

from tests.server.conftest import b64, png_of, tiny_server, wait_terminal, wav_of
from tests.torch_threads import one_torch_thread

pytestmark = pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffmpeg/ffprobe not on PATH")

SLUG = "sadtalker"
SR = 16000


def wav(seconds: float) -> bytes:
    """A voiced-sounding 16-bit WAV: 140 Hz harmonics under a 4 Hz syllable envelope."""
    t = np.arange(int(seconds * SR)) / SR
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 6))
    return wav_of(0.2 * voice * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)) * 32767, SR)


PHOTO = b64(png_of(astronaut()))
SPEECH = b64(wav(0.8))
BASE = {"input_image": PHOTO, "input_audio": SPEECH, "preprocess": "crop", "image_size": "256",
        "enhancer": False, "seed": 7}


def probe(video: bytes, tmp_path) -> dict:
    path = tmp_path / "out.mp4"
    path.write_bytes(video)
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-of", "json", str(path)],
                         capture_output=True, check=True, text=True).stdout
    return {s["codec_type"]: s for s in json.loads(out)["streams"]}


@pytest.fixture(scope="module")
def server(tiny_weights, tmp_path_factory):
    with one_torch_thread(), tiny_server(tiny_weights, tmp_path_factory.mktemp("sadtalker_http"), SLUG,
                                         no_auth=True, request_timeout_s=300) as running:
        yield running


def post(server, path: str = f"/v1/{SLUG}", **changes) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json={**BASE, **changes}, timeout=300)


def test_v1_returns_an_mp4_with_one_frame_per_40_ms_and_an_audio_track(server, tmp_path):
    response = post(server)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["x-seed-value"] == "7"
    assert response.headers["x-weights-profile"] == "tiny"
    streams = probe(response.content, tmp_path)
    assert streams["video"]["codec_name"] == "h264" and streams["video"]["r_frame_rate"] == "25/1"
    assert int(streams["video"]["nb_read_frames"]) == 20  # int(0.8 s * 16000 / 640)
    assert streams["audio"]["codec_name"] == "aac"


def test_base64_answers_json_with_the_video(server, tmp_path):
    response = post(server, base64=True)
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["video"]
    assert probe(base64.b64decode(body["video"]), tmp_path)["video"]["codec_name"] == "h264"


def test_v2_queue_serves_the_video_url(server, tmp_path):
    submit = post(server, path=f"/v2/{SLUG}")
    assert submit.status_code == 200, submit.text
    status = wait_terminal(submit.json()["status_url"], limit=300).json()
    assert status["status"] == "COMPLETED", status
    result = httpx.get(submit.json()["response_url"]).json()
    video = httpx.get(result["video"]["url"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert probe(video.content, tmp_path)["audio"]["codec_name"] == "aac"


def test_too_short_audio_is_a_400(server):
    response = post(server, input_audio=b64(wav(0.05)))
    assert response.status_code == 400
    assert "too short" in response.json()["error"]


def test_dark_photo_has_no_face(server):
    response = post(server, input_image=b64(png_of(np.full((128, 128, 3), 20, np.uint8))))
    assert response.status_code == 400
    assert response.json() == {"error": "No face detected in input_image"}


def test_out_of_range_pose_style_names_the_field(server):
    response = post(server, pose_style=46)
    assert response.status_code == 400
    assert "pose_style" in response.json()["error"]
