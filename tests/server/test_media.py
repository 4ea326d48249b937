"""Media in: the three input forms, the SSRF guard, image and audio decoding limits."""
from __future__ import annotations

import asyncio
import base64
import ipaddress
import struct
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image

from server.errors import ApiError
from server.media import (
    decode_audio,
    decode_base64,
    decode_image,
    MediaLoader,
    is_forbidden_address,
    sniff_audio_container,
)
from tests.server.conftest import FACE, HEADERS, WAV, b64, encoded, make_settings, png_bytes, running


def fetch_media(value, field, settings):
    return asyncio.run(MediaLoader(settings).media_bytes(value, field))


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.0.0.1", "172.16.3.4", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
    "224.0.0.1", "240.0.0.1", "255.255.255.255", "::1", "fe80::1", "fc00::1", "ff02::1", "::",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "2002:7f00:1::", "64:ff9b::a00:1",
])
def test_forbidden_addresses(address):
    assert is_forbidden_address(ipaddress.ip_address(address), [])


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses(address):
    assert not is_forbidden_address(ipaddress.ip_address(address), [])


def test_allowlist_opens_a_private_network():
    allowed = [ipaddress.ip_network("10.1.0.0/16")]
    assert not is_forbidden_address(ipaddress.ip_address("10.1.2.3"), allowed)
    assert is_forbidden_address(ipaddress.ip_address("10.2.0.1"), allowed)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/face.png",
    "http://10.0.0.1/face.png",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]:8080/face.png",
    "http://loopback.test/face.png",
    "http://metadata.test/",
    "http://rebind.test/face.png",
    "http://v6loop.test/face.png",
])
def test_ssrf_targets_are_refused_before_connecting(tmp_path, url):
    settings = make_settings(tmp_path, fetch_allow=[])
    with pytest.raises(ApiError) as caught:
        fetch_media(url, "image", settings)
    assert caught.value.status == 400 and "refusing to fetch" in caught.value.message


@pytest.mark.parametrize("scheme_url", ["file:///etc/passwd", "ftp://example.com/x", "gopher://x"])
def test_other_schemes_are_not_urls(tmp_path, scheme_url):
    with pytest.raises(ApiError) as caught:
        fetch_media(scheme_url, "image", make_settings(tmp_path))
    assert caught.value.status == 400


def test_ssrf_over_http(tmp_path, origin):
    """Through the API: a server without the allowlist refuses loopback, even via a DNS name."""
    with running(tmp_path, fetch_allow=[]) as server:
        for url in (f"{origin}/face.png", "http://loopback.test/face.png", "http://[::1]/x",
                    "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/x"):
            response = httpx.post(f"{server.url}/v1/face-to-sticker", json={"image": url}, headers=HEADERS)
            assert response.status_code == 400, url
            assert "refusing to fetch" in response.json()["error"]


def test_redirects_are_rechecked(api, origin):
    for path in ("/to-private", "/to-metadata"):
        response = httpx.post(f"{api.url}/v1/face-to-sticker", json={"image": f"{origin}{path}"}, headers=HEADERS)
        assert response.status_code == 400 and "refusing to fetch" in response.json()["error"]
    followed = httpx.post(f"{api.url}/v1/face-to-sticker", json={"image": f"{origin}/to-face"}, headers=HEADERS)
    assert followed.status_code == 200


def test_connection_goes_to_the_checked_address(api, origin):
    """images.test exists only in the test DNS table: the fetch works only if the server
    connects to the address it checked instead of resolving the name again."""
    port = origin.rsplit(":", 1)[1]
    response = httpx.post(f"{api.url}/v1/face-to-sticker", json={"image": f"http://images.test:{port}/face.png"},
                          headers=HEADERS)
    assert response.status_code == 200


def test_fetch_refusals(api, origin):
    cases = {
        "/page.html": (400, "returned text/html"),
        "/missing.png": (400, "failed with HTTP 404"),
        "/big.png": (413, "byte limit"),
    }
    for path, (status, text) in cases.items():
        response = httpx.post(f"{api.url}/v1/face-to-sticker", json={"image": f"{origin}{path}"}, headers=HEADERS)
        assert response.status_code == status, path
        assert text in response.json()["error"]
    octet = httpx.post(f"{api.url}/v1/face-to-sticker", json={"image": f"{origin}/octet.png"}, headers=HEADERS)
    assert octet.status_code == 200


def test_unresolvable_host(tmp_path):
    with pytest.raises(ApiError) as caught:
        fetch_media("http://nowhere.invalid/x.png", "image", make_settings(tmp_path))
    assert caught.value.message == "image: could not resolve the host of http://nowhere.invalid/x.png"


# -- the three forms and decoding -------------------------------------------------------------


def test_base64_data_uri_and_urlsafe_forms(tmp_path):
    settings = make_settings(tmp_path)
    assert fetch_media(b64(FACE), "image", settings) == FACE
    assert fetch_media("data:image/png;base64," + b64(FACE), "image", settings) == FACE
    urlsafe = base64.urlsafe_b64encode(FACE).decode().rstrip("=")
    assert fetch_media(urlsafe, "image", settings) == FACE
    wrapped = "\n".join(b64(FACE)[i:i + 76] for i in range(0, len(b64(FACE)), 76))
    assert fetch_media(wrapped, "image", settings) == FACE


def test_truncated_base64_is_400(api):
    text = b64(FACE)
    with pytest.raises(ApiError):
        decode_base64(text[:-5] + "!", "image")
    for cut in (text[: len(text) // 2], text[: len(text) // 2 + 1]):
        response = httpx.post(f"{api.url}/v1/face-to-sticker", json={"image": cut}, headers=HEADERS)
        assert response.status_code == 400
        assert response.json()["error"].startswith("image ")


def test_not_media_at_all(api):
    response = httpx.post(f"{api.url}/v1/face-to-sticker", json={"image": "hello, world!"}, headers=HEADERS)
    assert response.status_code == 400
    assert "neither an http(s) URL, a data URI nor valid base64" in response.json()["error"]
    text = httpx.post(f"{api.url}/v1/face-to-sticker", json={"image": b64(b"just some text")}, headers=HEADERS)
    assert text.status_code == 400 and "not an image" in text.json()["error"]


def bomb_png(side: int) -> bytes:
    """A valid 1-bit PNG of side×side black pixels: tiny compressed, huge decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = (b"\x00" + b"\x00" * ((side + 7) // 8)) * side
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding(api):
    bomb = bomb_png(12000)
    assert len(bomb) < 2**20  # small on the wire, 144 megapixels decoded
    response = httpx.post(f"{api.url}/v1/face-to-sticker", json={"image": b64(bomb)}, headers=HEADERS)
    assert response.status_code == 400
    assert "12000x12000 pixels" in response.json()["error"]


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), (10, 200, 10))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    assert decode_image(encoded(image, "JPEG", exif=exif), "image", 10**6).shape == (40, 20, 3)


def test_rgba_and_grey_become_rgb():
    rgba = decode_image(png_bytes(color=(10, 20, 30, 0), mode="RGBA"), "image", 10**6)
    assert rgba.shape == (24, 32, 3) and rgba.dtype == np.uint8 and tuple(rgba[0, 0]) == (10, 20, 30)
    grey = decode_image(png_bytes(color=128, mode="L"), "image", 10**6)
    assert grey.shape == (24, 32, 3)


def test_truncated_image_is_400():
    with pytest.raises(ApiError) as caught:
        decode_image(FACE[: len(FACE) // 2], "image", 10**6)
    assert caught.value.status == 400


def test_audio_is_decoded_to_16k_mono():
    audio = decode_audio(WAV, "input_audio", 10)
    assert audio.sample_rate == 16000 and audio.samples.dtype == np.float32
    assert abs(audio.samples.size - 8000) < 50 and 0.2 < np.abs(audio.samples).max() <= 1.0


def test_audio_limits_and_formats():
    with pytest.raises(ApiError) as too_long:
        decode_audio(WAV, "input_audio", 0.25)
    assert "longer than the 0.25 s allowed" in too_long.value.message
    with pytest.raises(ApiError) as not_audio:
        decode_audio(FACE, "input_audio", 10)
    assert not_audio.value.message == "input_audio is not mp3, wav, m4a, ogg or flac audio"
    with pytest.raises(ApiError) as broken:
        decode_audio(b"RIFF" + b"\x00" * 100, "input_audio", 10)
    assert broken.value.message == "input_audio could not be decoded as audio"
    assert sniff_audio_container(b"ID3\x03") == "mp3" and sniff_audio_container(b"\x00\x00\x00\x20ftypM4A ") == "mov"
    assert sniff_audio_container(b"#EXTM3U\nhttp://10.0.0.1/x") is None


def test_sadtalker_audio_through_the_api(api, origin):
    body = {"input_image": b64(FACE), "input_audio": "data:audio/wav;base64," + b64(WAV)}
    assert httpx.post(f"{api.url}/v1/sadtalker", json=body, headers=HEADERS).status_code == 200
    bad = httpx.post(f"{api.url}/v1/sadtalker", json=dict(body, input_audio=b64(FACE)), headers=HEADERS)
    assert bad.status_code == 400 and bad.json()["error"].startswith("input_audio")
