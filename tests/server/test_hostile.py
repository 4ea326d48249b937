"""Hostile input never costs availability (issue 13): generated attacks on every route answer
below 500, and the server still serves an honest request afterwards.

Categories (each a bounded number of requests, counted in ``FIGURES``):
- schemathesis negative data for every operation with a body (the GET operations' only
  parameters are free strings, which schemathesis cannot make invalid, so hostile paths,
  queries and headers are generated for them here instead);
- nested JSON: arbitrarily deep arrays and objects, closed or not, and random JSON bodies;
- URL forms: every spelling of private addresses (numeric, IDNA, IPv4-in-IPv6), garbage hosts
  and ports; the server may connect to loopback only, and here even that is refused;
- malformed PNG/JPEG/WebP/WAV/MP3: valid headers truncated, overwritten or with huge sizes.
Run with ``-s`` to see the figures.
"""
from __future__ import annotations

import base64
import collections
import io
import json
import struct
import urllib.parse
import zlib

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis import GenerationMode

from server import media
from server.app import create_app
from server.errors import ApiError
from server.settings import Settings
from tests.server.conftest import FACE, KEY, WAV, b64, running

HEADERS = {"x-api-key": KEY}
FIGURES: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
BOUNDED = settings(deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)

DOCUMENT = create_app(Settings(keys_file="/nonexistent/keys.json")).openapi()
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
BODY_OPERATIONS = [(path, method.upper()) for path, methods in DOCUMENT["paths"].items()
                   for method, spec in methods.items() if "requestBody" in spec]
GET_PATHS = [path for path, methods in DOCUMENT["paths"].items() if "get" in methods]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A server that refuses every input URL before connecting (no allowlist; the test refuses
    public addresses too), with small limits so that refusals are quick."""
    real_pinned = media.pinned_address

    async def loopback_only(target, settings_, field, url):
        address = await real_pinned(target, settings_, field, url)
        if not address.is_loopback:
            raise ApiError(400, f"{field}: the hostile-input test contacts no address but loopback")
        return address

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(media, "pinned_address", loopback_only)
        with running(tmp_path_factory.mktemp("hostile"), fetch_allow=[], max_input_bytes=2**20,
                     max_pixels=4_000_000, fetch_connect_timeout_s=0.2, fetch_read_timeout_s=0.5,
                     fetch_total_timeout_s=1.0) as server:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                yield client
            assert_still_healthy(server.url)


def assert_still_healthy(url: str) -> None:
    assert httpx.get(f"{url}/health").status_code == 200
    honest = httpx.post(f"{url}/v1/face-to-sticker", headers=HEADERS, json={"image": b64(FACE)}, timeout=30)
    assert honest.status_code == 200 and honest.headers["content-type"] == "image/png"


def record(category: str, response: httpx.Response) -> httpx.Response:
    FIGURES[category]["requests"] += 1
    if response.status_code >= 500:
        FIGURES[category]["5xx"] += 1
    assert response.status_code < 500, (category, response.request.method, str(response.request.url)[:200],
                                        response.status_code, response.text[:300])
    return response


# -- schemathesis, negative -------------------------------------------------------------------


@pytest.mark.parametrize(("path", "method"), BODY_OPERATIONS)
def test_negative_bodies_from_the_schema(hostile, path, method):
    @given(case=SCHEMA[path][method].as_strategy(generation_mode=GenerationMode.NEGATIVE))
    @settings(BOUNDED, max_examples=6)
    def check(case):
        record("schemathesis negative", case.call(base_url=str(hostile.base_url).rstrip("/"), headers=HEADERS,
                                                  timeout=30))

    check()


# -- hostile paths, queries and headers on every route -------------------------------------------

SEGMENT = st.one_of(
    st.text(min_size=0, max_size=40),
    st.sampled_from(["..", "../../etc/passwd", "%2e%2e%2f", "%00", "\x00", "a" * 5000, "😀", "*", "%"]),
)
HEADER_VALUE = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=200)


@given(path=st.sampled_from(GET_PATHS + ["/v1/{slug}", "/v2/{slug}", "/{slug}"]), segment=SEGMENT,
       query=st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=3),
       key=st.one_of(st.just(KEY), HEADER_VALUE), forwarded=HEADER_VALUE,
       method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]))
@settings(BOUNDED, max_examples=80)
def test_hostile_paths_queries_and_headers(hostile, path, segment, query, key, forwarded, method):
    quoted = urllib.parse.quote(segment, safe="/%.:@")
    target = path.replace("{request_id}", quoted).replace("{name}", quoted).replace("{slug}", quoted)
    headers = {"x-api-key": key, "x-forwarded-host": forwarded, "host": forwarded or "h"}
    record("hostile paths and headers", hostile.request(method, target, params=query, headers=headers))


# -- nested JSON ---------------------------------------------------------------------------------

OPENER = st.sampled_from(["[", '{"a":', '{"image":', "[1,"])


@given(depth=st.integers(1, 120_000), opener=OPENER, closed=st.booleans(),
       slug=st.sampled_from(["face-to-sticker", "sadtalker"]), version=st.sampled_from(["v1", "v2"]))
@settings(BOUNDED, max_examples=30)
def test_deeply_nested_bodies(hostile, depth, opener, closed, slug, version):
    closer = "]" if opener.startswith("[") else "}"
    body = opener * depth + "1" + (closer * depth if closed else "")
    response = record("nested JSON", hostile.post(f"/{version}/{slug}", content=body, headers=HEADERS))
    if depth > 32:
        assert response.status_code == 400


@pytest.mark.parametrize("body", ["{" * 50_000, "[" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000])
def test_the_reported_bombs_are_400(hostile, body):
    response = record("nested JSON", hostile.post("/v1/face-to-sticker", content=body, headers=HEADERS))
    assert response.status_code == 400 and "nested" in response.json()["error"]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)
FIELDS = ["image", "input_image", "input_audio", "prompt", "steps", "seed", "base64", "image_format",
          "width", "pose_style", "preprocess", "source_image"]


@given(body=st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=6),
       slug=st.sampled_from(["face-to-sticker", "sadtalker", "faceswap-v4", "expression-editor"]))
@settings(BOUNDED, max_examples=40)
def test_random_json_values_in_every_field(hostile, body, slug):
    content = json.dumps(body, allow_nan=True)
    record("nested JSON", hostile.post(f"/v1/{slug}", content=content, headers=HEADERS))


# -- URL forms -----------------------------------------------------------------------------------

PRIVATE_V4 = st.sampled_from([0x7F000001, 0x0A000001, 0xA9FEA9FE, 0xC0A80001, 0xAC100001, 0x00000000,
                              0x64400001, 0xE0000001, 0xFFFFFFFF])


def spellings(value: int) -> st.SearchStrategy[str]:
    """Ways to write one IPv4 address that a browser's URL parser reads as that address."""
    octets = [(value >> s) & 0xFF for s in (24, 16, 8, 0)]
    dotted = ".".join(map(str, octets))
    circled = str.maketrans("0123456789", "⓪①②③④⑤⑥⑦⑧⑨")
    fullwidth = str.maketrans("0123456789.", "０１２３４５６７８９．")
    return st.sampled_from([
        dotted, str(value), hex(value), oct(value).replace("0o", "0"),
        ".".join(f"0{o:o}" for o in octets), ".".join(hex(o) for o in octets),
        f"{octets[0]}.{(value & 0xFFFFFF)}", f"{octets[0]}.{octets[1]}.{value & 0xFFFF}",
        dotted + ".", dotted.translate(circled), dotted.translate(fullwidth), dotted.replace(".", "。"),
        f"[::ffff:{dotted}]", f"[::{dotted}]", f"[::ffff:{value >> 16:x}:{value & 0xFFFF:x}]",
        "%" + "%".join(f"{b:02x}" for b in dotted.encode()),
    ])


GARBAGE_HOSTS = st.one_of(
    st.text(min_size=0, max_size=30),
    st.sampled_from(["[", "]", "[::1", "[zz]", "[fe80::1%25lo]", "256.1.1.1", "1.2.3.4.5", "0x", "09.1",
                     "-a-.com", "a..b", "xn--", "xn--zz", "ß.de", "\u200b.com", "a" * 300, "local host",
                     "user@127.0.0.1", "127.0.0.1@evil.com", "evil.com\\@127.0.0.1"]),
)
PORTS = st.one_of(st.just(""), st.integers(-5, 70_000).map(lambda p: f":{p}"), st.sampled_from([":", ":x", ":80:80"]))
PATHS = st.one_of(st.just("/face.png"), st.text(max_size=40).map(lambda t: "/" + t))


@given(host=st.one_of(PRIVATE_V4.flatmap(spellings), GARBAGE_HOSTS), port=PORTS, path=PATHS,
       scheme=st.sampled_from(["http", "https", "HTTP", "hTtPs"]),
       field=st.sampled_from([("face-to-sticker", "image"), ("faceswap-v4", "source_image"),
                              ("sadtalker", "input_audio")]))
@settings(BOUNDED, max_examples=120)
def test_url_forms_are_refused_with_the_field_named(hostile, host, port, path, scheme, field):
    slug, name = field
    body = {"image": b64(FACE), "source_image": b64(FACE), "target_image": b64(FACE), "input_image": b64(FACE),
            "input_audio": b64(WAV), name: f"{scheme}://{host}{port}{path}"}
    response = record("URL forms", hostile.post(f"/v1/{slug}", json=body, headers=HEADERS))
    assert 400 <= response.status_code < 500 and name in response.json()["error"]


# -- malformed media -----------------------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (CRC valid) over a tiny compressed body."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) \
        + png_chunk(b"IEND", b"")


def encoded_image(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 16), (200, 150, 120)).save(buffer, format=fmt)
    return buffer.getvalue()


# An MPEG-1 Layer III frame header (128 kbit/s, 44.1 kHz) after an empty ID3v2 tag.
MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + (b"\xff\xfb\x90\x64" + b"\x00" * 413) * 4
SAMPLES = {"png": encoded_image("PNG"), "jpeg": encoded_image("JPEG"), "webp": encoded_image("WEBP"),
           "wav": WAV, "mp3": MP3}


@st.composite
def damaged(draw) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(sorted(SAMPLES)))
    data = bytearray(SAMPLES[kind])
    how = draw(st.sampled_from(["truncate", "overwrite", "huge", "garbage tail"]))
    if how == "truncate":
        del data[draw(st.integers(0, len(data) - 1)):]
    elif how == "overwrite":
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, min(63, len(data) - 1)))] = draw(st.integers(0, 255))
    elif how == "huge":
        if kind == "png":
            data = bytearray(huge_png(draw(st.integers(1, 2**31 - 1)), draw(st.integers(1, 2**31 - 1))))
        elif kind == "wav":
            data[4:8] = data[40:44] = b"\xff\xff\xff\x7f"  # RIFF and data sizes near 2 GiB
        else:
            data[4:12] = b"\xff" * 8
    else:
        data += draw(st.binary(min_size=1, max_size=256))
    return kind, bytes(data)


@given(sample=damaged(), as_data_uri=st.booleans())
@settings(BOUNDED, max_examples=80)
def test_malformed_media_headers(hostile, sample, as_data_uri):
    kind, data = sample
    text = base64.b64encode(data).decode()
    if as_data_uri:
        text = f"data:application/octet-stream;base64,{text}"
    if kind in ("wav", "mp3"):
        body = {"input_image": b64(FACE), "input_audio": text}
        response = record("malformed media", hostile.post("/v1/sadtalker", json=body, headers=HEADERS))
    else:
        response = record("malformed media", hostile.post("/v1/face-to-sticker", json={"image": text}, headers=HEADERS))
    assert response.status_code in (200, 400, 413)


def test_zz_figures(hostile):
    """The closing note's figures (printed with -s): requests per category, and no 5xx."""
    for category, counts in sorted(FIGURES.items()):
        print(f"{category}: {counts['requests']} requests, {counts['5xx']} answered 5xx")
    assert not any(counts["5xx"] for counts in FIGURES.values())
