"""Media in: image and audio fields arrive as an http(s) URL, raw base64 or a data URI.

Decoding order per segmind-api.md §6 "Input decoding order": ``data:`` prefix, then http(s)
URL (fetched with size/time limits behind an SSRF guard), then strict base64; the bytes are
then sniffed and decoded. Every refusal is an ``ApiError`` (400, or 413 for size).
"""
from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import socket
import subprocess
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipelines.base import Audio
from server.errors import ApiError
from server.protocol import Endpoint, SegmindRequest
from server.settings import Settings

AUDIO_RATE = 16_000  # what the audio pipelines consume: 16 kHz mono float32 (sadtalker.md)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the last 32 bits are an IPv4 address


# -- where a reference points -----------------------------------------------------------------


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (a seam the tests replace with a fixed table)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def is_forbidden_address(ip: IPAddress, allowed: list) -> bool:
    """True for loopback, private, link-local (cloud metadata), multicast, reserved and the like,
    including IPv4 addresses tunnelled in IPv6, unless an allowlisted network contains it."""
    if any(ip in net for net in allowed if net.version == ip.version):
        return False
    if ip.version == 6:
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and is_forbidden_address(embedded, allowed):
            return True
    return ip.is_multicast or not ip.is_global


def pinned_address(host: str, port: int, settings: Settings, url: str) -> str:
    """The one address to connect to, after checking every address the name resolves to.

    Connecting to this checked address (not re-resolving) is what defeats DNS rebinding.
    """
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            addresses = [ipaddress.ip_address(a.split("%")[0]) for a in resolve_host(host, port)]
        except (OSError, UnicodeError):
            raise ApiError(400, f"could not resolve the host of {url}") from None
    if not addresses:
        raise ApiError(400, f"could not resolve the host of {url}")
    allowed = settings.allowed_networks
    for address in addresses:
        if is_forbidden_address(address, allowed):
            raise ApiError(
                400, f"refusing to fetch {url}: {host} is a private, loopback, link-local or reserved address"
            )
    return str(addresses[0])


def fetch_url(url: str, settings: Settings) -> bytes:
    """GET an input URL, re-checking every redirect hop, within the size and time limits."""
    timeout = httpx.Timeout(settings.fetch_read_timeout_s, connect=settings.fetch_connect_timeout_s)
    # trust_env=False: a proxy from the environment would resolve names itself and skip the guard.
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for _ in range(settings.fetch_max_redirects + 1):
            target = httpx.URL(url)
            if target.scheme not in ("http", "https") or not target.host:
                raise ApiError(400, f"only http(s) URLs can be fetched, not {url}")
            port = target.port or (443 if target.scheme == "https" else 80)
            address = pinned_address(target.host, port, settings, url)
            host_header = target.netloc.decode("ascii")
            try:
                with client.stream(
                    "GET",
                    target.copy_with(host=address),
                    headers={"Host": host_header, "Accept": "*/*"},
                    extensions={"sni_hostname": target.host},
                ) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urllib.parse.urljoin(url, response.headers["location"])
                        continue
                    if response.status_code != 200:
                        raise ApiError(400, f"fetching {url} failed with HTTP {response.status_code}")
                    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
                    if kind.startswith("text/") or kind.endswith(("json", "xml")):
                        raise ApiError(400, f"{url} returned {kind}, not an image or audio file")
                    return _read_capped(response, settings.max_input_bytes, url)
            except httpx.TimeoutException:
                raise ApiError(400, f"timed out fetching {url}") from None
            except httpx.HTTPError as exc:
                raise ApiError(400, f"could not fetch {url}: {type(exc).__name__}") from None
    raise ApiError(400, f"too many redirects fetching {url}")


def _read_capped(response: httpx.Response, limit: int, url: str) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"{url} is larger than the {limit} byte limit")
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"{url} is larger than the {limit} byte limit")
        chunks.append(chunk)
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


def fetch_media(value: str, field: str, settings: Settings) -> bytes:
    """The bytes behind one media field, whichever of the three forms it takes."""
    if value[:5].lower() == "data:":
        data = decode_data_uri(value, field)
    elif value[:7].lower() == "http://" or value[:8].lower() == "https://":
        data = fetch_url(value, settings)
    else:
        data = decode_base64(value, field)
    if len(data) > settings.max_input_bytes:
        raise ApiError(413, f"{field} is larger than the {settings.max_input_bytes} byte limit")
    if not data:
        raise ApiError(400, f"{field} is empty")
    return data


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


def load_inputs(endpoint: Endpoint, request: SegmindRequest, settings: Settings
                ) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Fetch and decode every media field of a request: (raw bytes, decoded inputs)."""
    raw = {
        field: fetch_media(getattr(request, field), field, settings)
        for field in endpoint.media_fields
        if getattr(request, field) is not None
    }
    return raw, decode_inputs(endpoint, raw, settings)


def save_inputs(raw: dict[str, bytes], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for field, data in raw.items():
        (folder / field).write_bytes(data)


def read_inputs(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir()} if folder.is_dir() else {}
