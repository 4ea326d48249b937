"""Media in: image and audio fields arrive as an http(s) URL, raw base64 or a data URI.

Decoding order per segmind-api.md §6 "Input decoding order": ``data:`` prefix, then http(s)
URL (fetched behind an SSRF guard), then strict base64; the bytes are then sniffed and decoded.
Every refusal is an ``ApiError`` (400, or 413 for size) whose message names the field.

URL fetches are asynchronous and hold no thread: a source that answers slowly costs one slot of
a bounded set (``fetch_concurrency``, with at most ``fetch_queue_max`` requests waiting), and
every fetch ends within ``fetch_total_timeout_s`` or as soon as it falls below
``fetch_min_bytes_per_s``. So slow sources cannot take the threads that other requests and the
model workers need (issue 13, "slow-drip media URLs").
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import io
import ipaddress
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import anyio
import certifi
import httpx
import numpy as np
from fastapi.concurrency import run_in_threadpool
from PIL import Image, ImageOps, UnidentifiedImageError

from pipelines.base import Audio
from server.datafiles import make_private_dir, write_private
from server.errors import ApiError
from server.protocol import Endpoint, SegmindRequest
from server.settings import Settings
from server.urls import HttpTarget, IPAddress, UrlError, parse_http_url, unwrap_ipv4

AUDIO_RATE = 16_000  # what the audio pipelines consume: 16 kHz mono float32 (sadtalker.md)

NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the last 32 bits are an IPv4 address
MAX_URL_CHARS = 8192  # what common servers accept in a request line; longer is not a real URL
# The first seconds of a transfer include the TCP handshake and slow start: the minimum rate is
# enforced only after them.
RATE_GRACE_S = 2.0


# -- where a reference points -----------------------------------------------------------------


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (a seam the tests replace with a fixed table)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def is_forbidden_address(ip: IPAddress, allowed: list) -> bool:
    """True for loopback, private, link-local (cloud metadata), multicast, reserved and the like,
    including IPv4 addresses carried in IPv6, unless an allowlisted network contains it."""
    ip = unwrap_ipv4(ip)
    if any(ip in net for net in allowed if net.version == ip.version):
        return False
    if ip.version == 6:
        embedded = ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and is_forbidden_address(embedded, allowed):
            return True
    return ip.is_multicast or not ip.is_global


async def pinned_address(target: HttpTarget, settings: Settings, field: str, url: str) -> IPAddress:
    """The one address to connect to, after checking every address the host resolves to.

    Connecting to this checked address (not re-resolving) is what defeats DNS rebinding.
    """
    if target.address is not None:
        addresses = [target.address]
    else:
        try:
            # A thread of asyncio's own executor: a slow resolver never holds a request thread.
            names = await asyncio.to_thread(resolve_host, target.host, target.port)
            addresses = [unwrap_ipv4(ipaddress.ip_address(a.split("%")[0])) for a in names]
        except (OSError, UnicodeError, ValueError):
            raise ApiError(400, f"{field}: could not resolve the host of {url}") from None
    if not addresses:
        raise ApiError(400, f"{field}: could not resolve the host of {url}")
    for address in addresses:
        if is_forbidden_address(address, settings.allowed_networks):
            raise ApiError(400, f"{field}: refusing to fetch {url}: {target.host} is a private, loopback, "
                                "link-local or reserved address")
    return addresses[0]


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's default verification (certifi's roots), built once: loading the roots takes tens
    of milliseconds of CPU, too long to repeat on the event loop for every fetch."""
    return ssl.create_default_context(cafile=certifi.where())


def parsed_url(url: str, field: str) -> HttpTarget:
    if len(url) > MAX_URL_CHARS:
        raise ApiError(400, f"{field}: the URL is longer than {MAX_URL_CHARS} characters")
    try:
        return parse_http_url(url)
    except UrlError as exc:
        raise ApiError(400, f"{field}: invalid URL {url[:200]!r}: {exc}") from None


async def fetch_url(url: str, field: str, settings: Settings) -> bytes:
    """GET an input URL within the size, time and rate limits, re-checking every redirect hop."""
    try:
        with anyio.fail_after(settings.fetch_total_timeout_s):
            return await _follow_redirects(url, field, settings)
    except TimeoutError:
        raise ApiError(
            400, f"{field}: fetching {url[:200]} took longer than {settings.fetch_total_timeout_s:g} s"
        ) from None


async def _follow_redirects(url: str, field: str, settings: Settings) -> bytes:
    timeout = httpx.Timeout(settings.fetch_read_timeout_s, connect=settings.fetch_connect_timeout_s)
    # trust_env=False: a proxy from the environment would resolve names itself and skip the guard.
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False,
                                 verify=tls_context()) as client:
        for _ in range(settings.fetch_max_redirects + 1):
            target = parsed_url(url, field)
            address = await pinned_address(target, settings, field, url)
            try:
                async with client.stream(
                    "GET", target.at(address),
                    # identity: a compressed body would be inflated beyond the size we count.
                    headers={"Host": target.authority, "Accept": "*/*", "Accept-Encoding": "identity"},
                    extensions={"sni_hostname": target.host},
                ) as response:
                    if response.is_redirect and "location" in response.headers:
                        try:
                            url = urllib.parse.urljoin(url, response.headers["location"])
                        except ValueError:
                            raise ApiError(400, f"{field}: {url} redirects to an invalid URL") from None
                        continue
                    return await _read_body(response, field, url, settings)
            except httpx.TimeoutException:
                raise ApiError(400, f"{field}: timed out fetching {url}") from None
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                raise ApiError(400, f"{field}: could not fetch {url}: {type(exc).__name__}") from None
    raise ApiError(400, f"{field}: too many redirects fetching {url}")


async def _read_body(response: httpx.Response, field: str, url: str, settings: Settings) -> bytes:
    """The body of a 200, at most ``max_input_bytes``, refused when it arrives too slowly."""
    if response.status_code != 200:
        raise ApiError(400, f"{field}: fetching {url} failed with HTTP {response.status_code}")
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind.startswith("text/") or kind.endswith(("json", "xml")):
        raise ApiError(400, f"{field}: {url} returned {kind}, not an image or audio file")
    if response.headers.get("content-encoding", "identity").strip().lower() != "identity":
        raise ApiError(400, f"{field}: {url} sent a compressed body although asked not to")
    limit = settings.max_input_bytes
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"{field}: {url} is larger than the {limit} byte limit")
    started = time.monotonic()
    chunks, size = [], 0
    async for chunk in response.aiter_raw():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"{field}: {url} is larger than the {limit} byte limit")
        chunks.append(chunk)
        elapsed = time.monotonic() - started
        if elapsed > RATE_GRACE_S and size < settings.fetch_min_bytes_per_s * elapsed:
            raise ApiError(400, f"{field}: {url} is sending slower than {settings.fetch_min_bytes_per_s:g} bytes/s")
    return b"".join(chunks)


def decode_base64(text: str, field: str) -> bytes:
    compact = "".join(text.split())
    compact += "=" * (-len(compact) % 4)
    alphabet = b"-_" if ("-" in compact or "_" in compact) else b"+/"
    try:
        return base64.b64decode(compact, altchars=alphabet, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(
            400, f"{field} is neither an http(s) URL, a data URI nor valid base64 (truncated or corrupt?)"
        ) from None


def decode_data_uri(uri: str, field: str) -> bytes:
    header, comma, payload = uri.partition(",")
    if not comma:
        raise ApiError(400, f"{field} is a malformed data URI")
    if header.endswith(";base64"):
        return decode_base64(payload, field)
    return urllib.parse.unquote_to_bytes(payload)


def decode_inline_media(value: str, field: str) -> bytes:
    """The bytes of a data URI or raw base64 field."""
    if value[:5].lower() == "data:":
        return decode_data_uri(value, field)
    return decode_base64(value, field)


def is_http_url(value: str) -> bool:
    return value[:7].lower() == "http://" or value[:8].lower() == "https://"


def max_field_chars(max_input_bytes: int) -> int:
    """The longest text a media field may be: base64 of the largest input, with line breaks
    (MIME wraps at 76 characters) and a data-URI header."""
    return max_input_bytes * 4 // 3 * 78 // 76 + 1024


class MediaLoader:
    """Turns a request's media fields into bytes and decoded inputs; owns the fetch slots."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._slots = asyncio.Semaphore(settings.fetch_concurrency)
        self._waiting = 0

    async def _fetch_in_slot(self, url: str, field: str) -> bytes:
        if self._slots.locked() and self._waiting >= self.settings.fetch_queue_max:
            raise ApiError(429, "too many input URLs are being fetched right now; retry shortly")
        self._waiting += 1
        try:
            with anyio.fail_after(self.settings.fetch_total_timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            raise ApiError(429, "too many input URLs are being fetched right now; retry shortly") from None
        finally:
            self._waiting -= 1
        try:
            return await fetch_url(url, field, self.settings)
        finally:
            self._slots.release()

    async def media_bytes(self, value: str, field: str) -> bytes:
        """The bytes behind one media field, whichever of the three forms it takes."""
        limit = self.settings.max_input_bytes
        if len(value) > max_field_chars(limit):
            raise ApiError(413, f"{field} is larger than the {limit} byte limit")
        if is_http_url(value):
            data = await self._fetch_in_slot(value, field)
        else:
            data = await run_in_threadpool(decode_inline_media, value, field)
        if len(data) > limit:
            raise ApiError(413, f"{field} is larger than the {limit} byte limit")
        if not data:
            raise ApiError(400, f"{field} is empty")
        return data

    async def load_inputs(self, endpoint: Endpoint, request: SegmindRequest
                          ) -> tuple[dict[str, bytes], dict[str, Any]]:
        """Fetch and decode every media field of a request: (raw bytes, decoded inputs)."""
        raw = {}
        for field in endpoint.media_fields:
            value = getattr(request, field)
            if value is not None:
                raw[field] = await self.media_bytes(value, field)
        return raw, await run_in_threadpool(decode_inputs, endpoint, raw, self.settings)


# -- decoding ---------------------------------------------------------------------------------


def decode_image(data: bytes, field: str, max_pixels: int) -> np.ndarray:
    """uint8 HWC RGB, upright per EXIF, refusing decompression bombs before any pixel is decoded.

    Alpha is dropped as the original pipelines drop it (PIL ``convert("RGB")`` / ``cv2.imread``),
    so transparent pixels keep their stored colour and outputs match theirs.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ApiError(400, f"{field} has {width}x{height} pixels, more than the {max_pixels} allowed")
            image.load()
            upright = ImageOps.exif_transpose(image)
            return np.asarray(upright.convert("RGB"), dtype=np.uint8).copy()
    except Image.DecompressionBombError:
        raise ApiError(400, f"{field} is too large to decode (decompression bomb?)") from None
    except UnidentifiedImageError:
        raise ApiError(400, f"{field} is not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ApiError(400, f"{field} could not be decoded: {exc}") from None


# ffmpeg is told the container explicitly, so a playlist or concat file can never make it open
# other files or URLs (only these demuxers run).
AUDIO_MAGIC = (
    (b"RIFF", 0, "wav"),
    (b"OggS", 0, "ogg"),
    (b"fLaC", 0, "flac"),
    (b"ID3", 0, "mp3"),
    (b"ftyp", 4, "mov"),  # m4a / mp4 / mov
)


def sniff_audio_container(data: bytes) -> str | None:
    for magic, offset, container in AUDIO_MAGIC:
        if data[offset:offset + len(magic)] == magic:
            return container
    if len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0:  # bare MPEG audio frame sync
        return "mp3"
    return None


def decode_audio(data: bytes, field: str, max_seconds: float) -> Audio:
    """16 kHz mono float32 via ffmpeg, at most ``max_seconds`` long."""
    container = sniff_audio_container(data)
    if container is None:
        raise ApiError(400, f"{field} is not mp3, wav, m4a, ogg or flac audio")
    with tempfile.NamedTemporaryFile(suffix=".audio") as source:
        source.write(data)
        source.flush()
        command = [
            "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
            "-protocol_whitelist", "file", "-f", container, "-i", source.name,
            "-t", str(max_seconds + 1), "-vn", "-ac", "1", "-ar", str(AUDIO_RATE), "-f", "f32le", "pipe:1",
        ]
        try:
            done = subprocess.run(command, capture_output=True, timeout=120, check=False)
        except FileNotFoundError:
            raise ApiError(503, "ffmpeg is not installed on this server, so audio cannot be decoded") from None
        except subprocess.TimeoutExpired:
            raise ApiError(400, f"decoding {field} took too long") from None
    samples = np.frombuffer(done.stdout, dtype=np.float32)
    if done.returncode != 0 or samples.size == 0:
        raise ApiError(400, f"{field} could not be decoded as audio")
    if samples.size > max_seconds * AUDIO_RATE:
        raise ApiError(400, f"{field} is longer than the {max_seconds:g} s allowed")
    return Audio(samples=samples.copy(), sample_rate=AUDIO_RATE)


def decode_inputs(endpoint: Endpoint, raw: dict[str, bytes], settings: Settings) -> dict[str, Any]:
    """Decode stored input bytes (as fetched) into what the pipeline takes."""
    decoded: dict[str, Any] = {}
    for field, media in endpoint.media_fields.items():
        if field not in raw:
            continue
        if media.kind == "image":
            decoded[field] = decode_image(raw[field], field, settings.max_pixels)
        else:
            decoded[field] = decode_audio(raw[field], field, settings.max_audio_seconds)
    return decoded


def save_inputs(raw: dict[str, bytes], folder: Path) -> None:
    make_private_dir(folder)
    for field, data in raw.items():
        write_private(folder / field, data)


def read_inputs(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir()} if folder.is_dir() else {}
