"""Server test fixtures: real uvicorn servers on 127.0.0.1 (random free ports) running the fake
pipelines, a local media server, a fixed DNS table, and helpers to build inputs.

The other packages' HTTP tests import the helpers from here: ``tiny_server`` serves one real
pipeline from the tiny profile, ``wait_terminal`` polls a v2 job, ``png_of`` and ``wav_of``
encode their inputs."""
from __future__ import annotations

import base64
import contextlib
import http.server
import io
import socket
import threading
import time
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image

from server import media
from server.app import create_app
from server.auth import KeyStore
from server.errors import ApiError
from server.settings import Settings
from tests.server import fake_pipeline

KEY = "SG_0123456789abcdef"
HEADERS = {"x-api-key": KEY}

# Names the tests resolve without a network (server.media.resolve_host is the seam).
DNS = {
    "images.test": ["127.0.0.1"],
    "loopback.test": ["127.0.0.1"],
    "metadata.test": ["169.254.169.254"],
    "rebind.test": ["93.184.216.34", "10.0.0.5"],
    "v6loop.test": ["::1"],
}


def fake_resolve(host: str, port: int) -> list[str]:
    if host in DNS:
        return DNS[host]
    raise socket.gaierror(f"{host} is not in the test DNS table")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def encoded(image: Image.Image, fmt: str = "PNG", **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def png_bytes(color=(200, 150, 120), size=(32, 24), mode="RGB", fmt="PNG", **save) -> bytes:
    return encoded(Image.new(mode, size, color), fmt, **save)


def png_of(pixels: np.ndarray) -> bytes:
    return encoded(Image.fromarray(pixels))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def wav_of(samples: np.ndarray, rate: int) -> bytes:
    """``samples`` (values in the int16 range) as a mono 16-bit WAV file."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.astype("<i2").tobytes())
    return buffer.getvalue()


def wav_bytes(seconds: float = 0.5, rate: int = 22050) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return wav_of(0.3 * np.sin(2 * np.pi * 440 * t) * 32767, rate)


FACE = png_bytes()
BLACK = png_bytes(color=(0, 0, 0))
WAV = wav_bytes()


class ServerThread:
    """uvicorn running ``create_app(settings)`` in a thread, on a free port of 127.0.0.1."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.app = create_app(settings)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=settings.port, log_level="warning",
                                lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{settings.port}"

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)

    @property
    def engine(self):
        return self.app.state.engine


def make_settings(tmp: Path, **overrides) -> Settings:
    weights = tmp / "weights"
    fake_pipeline.write_markers(weights)
    values = dict(
        port=free_port(), keys_file=tmp / "keys.json", weights_root=weights,
        job_store=tmp / "jobs.sqlite", outputs_dir=tmp / "outputs", fetch_allow=["127.0.0.1/32"],
        request_timeout_s=30, fetch_connect_timeout_s=2, fetch_read_timeout_s=5,
    )
    values.update(overrides)
    return Settings(**values)


@contextlib.contextmanager
def running(tmp: Path, key_credits=None, **overrides):
    settings = make_settings(tmp, **overrides)
    store = KeyStore(settings.keys_file)
    if not store.all():
        store.add(KEY, credits=key_credits)
    with ServerThread(settings) as server:
        yield server


@contextlib.contextmanager
def tiny_server(tiny_weights: Path, tmp: Path, slug: str, **overrides):
    """A server of the real pipeline ``slug`` on the tiny checkpoints, with ``KEY`` installed.
    ``weights="tiny"`` reads ``<weights_root>/tiny``, as ``FACEFOUNDRY_WEIGHTS=tiny`` does."""
    values = dict(
        port=free_port(), weights_root=tiny_weights.parent, weights="tiny", pipelines=[slug],
        keys_file=tmp / "keys.json", job_store=tmp / "jobs.sqlite", outputs_dir=tmp / "outputs",
    )
    values.update(overrides)
    settings = Settings(**values)
    KeyStore(settings.keys_file).add(KEY)
    with ServerThread(settings) as server:
        yield server


def wait_terminal(status_url: str, headers=HEADERS, limit: float = 20.0) -> httpx.Response:
    """Poll a v2 job's status until it is COMPLETED or FAILED; the last status response."""
    deadline = time.time() + limit
    while time.time() < deadline:
        response = httpx.get(status_url, headers=headers)
        if response.json().get("status") in ("COMPLETED", "FAILED"):
            return response
        time.sleep(0.05)
    raise AssertionError("job did not finish")


@contextlib.contextmanager
def local_origin(handler):
    """``http://127.0.0.1:<port>`` of a threaded http.server answering with ``handler``."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


def loopback_only(check):
    """``pinned_address`` that refuses, after the real check, any address off this machine: a
    generated URL with a literal public IP (schemathesis, Hypothesis) must never be connected to."""

    async def pinned(target, settings, field, url):
        address = await check(target, settings, field, url)
        if not address.is_loopback:
            raise ApiError(400, f"{field}: the test network reaches loopback only, not {address}")
        return address

    return pinned


@pytest.fixture(scope="package", autouse=True)
def fake_world():
    """The fakes, the DNS table and a loopback-only network, for this package only (other tests
    see the real registry)."""
    from pipelines import registry
    from server import webhooks

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(registry, "PIPELINES", {**registry.PIPELINES, **fake_pipeline.REGISTRY})
        patch.setattr(registry, "BUILT", dict.fromkeys(fake_pipeline.REGISTRY, True))
        patch.setattr(registry, "params_class", fake_pipeline.params_class)
        patch.setattr(media, "resolve_host", fake_resolve)
        pinned = loopback_only(media.pinned_address)
        patch.setattr(media, "pinned_address", pinned)
        patch.setattr(webhooks, "pinned_address", pinned)
        yield


class MediaHandler(http.server.BaseHTTPRequestHandler):
    """A local origin for input URLs: images, audio, redirects, HTML and a huge file."""

    routes: dict[str, tuple[int, str, bytes, dict]] = {}

    def do_GET(self):
        status, kind, body, headers = self.routes.get(self.path, (404, "text/plain", b"no", {}))
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="package")
def origin(fake_world):
    """Base URL of the local media server (http://127.0.0.1:<port>)."""
    MediaHandler.routes = {
        "/face.png": (200, "image/png", FACE, {}),
        "/black.png": (200, "image/png", BLACK, {}),
        "/voice.wav": (200, "audio/wav", WAV, {}),
        "/octet.png": (200, "application/octet-stream", FACE, {}),
        "/page.html": (200, "text/html", b"<html>not an image</html>", {}),
        "/to-face": (302, "text/plain", b"", {"Location": "/face.png"}),
        "/to-private": (302, "text/plain", b"", {"Location": "http://10.0.0.1/face.png"}),
        "/to-metadata": (302, "text/plain", b"", {"Location": "http://169.254.169.254/latest/meta-data/"}),
        "/big.png": (200, "image/png", b"\x89PNG" + b"\x00" * (3 * 2**20), {}),
    }
    with local_origin(MediaHandler) as url:
        yield url


@pytest.fixture(scope="package")
def api(tmp_path_factory, origin):
    """The main server: auth on, one unlimited key, every fake pipeline installed."""
    with running(tmp_path_factory.mktemp("api"), max_input_bytes=2**20) as server:
        yield server
