"""The browser playground (issue 15) in a real browser: Debian's chromium driven by Playwright
against a tiny-profile server on 127.0.0.1 serving expression-editor and sadtalker.

Each browser test leaves a full-page screenshot in ``test-artifacts/playground/`` (git-ignored),
the CI's artefact folder, whether it passed or not. Without chromium the browser tests skip
locally and fail under CI (CI=true), where the test command installs it with apt-get.
"""
from __future__ import annotations

import base64
import io
import os
import re
import shutil
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect, sync_playwright
from skimage.data import astronaut

from server.app import PLAYGROUND_DIR
from tests.server.conftest import KEY, png_of, tiny_server, wav_bytes
from tests.torch_threads import one_torch_thread

CHROMIUM = shutil.which("chromium")
# Playwright's own browser download is not available; its flags keep Debian's build quiet and
# offline (no sandbox inside the CI container, no GPU, no background fetches).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 # test-only: a fake microphone, granted without a prompt, for the recorder
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "playground"

ASTRONAUT_PNG = png_of(astronaut())
# All black and square: the tiny face detector finds nothing (tests/expression_editor).
BLANK_PNG = png_of(np.zeros((96, 96, 3), np.uint8))
SPEECH_WAV = wav_bytes(seconds=0.4, rate=16000)

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not IN_CI,
    reason="chromium is not installed (apt-get install chromium); under CI=true these tests fail instead",
)


def upload(name: str, mime: str, data: bytes) -> dict:
    return {"name": name, "mimeType": mime, "buffer": data}


def shown_image(page) -> np.ndarray:
    """The pixels of the result image as the page shows it (drawn to a canvas, read back as PNG)."""
    data_uri = page.evaluate("""() => {
        const image = document.querySelector('#output img');
        const canvas = document.createElement('canvas');
        canvas.width = image.naturalWidth;
        canvas.height = image.naturalHeight;
        canvas.getContext('2d').drawImage(image, 0, 0);
        return canvas.toDataURL('image/png');
    }""")
    with Image.open(io.BytesIO(base64.b64decode(data_uri.split(",", 1)[1]))) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def server(tiny_weights, tmp_path_factory):
    with one_torch_thread(), tiny_server(tiny_weights, tmp_path_factory.mktemp("playground"), "expression-editor",
                                         pipelines=["expression-editor", "sadtalker"],
                                         request_timeout_s=120) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.fail("CI=true but chromium is not installed: the test command must apt-get install chromium",
                    pytrace=False)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser, server, request):
    """The playground with the test key typed in; a screenshot of the page when the test ends."""
    context = browser.new_context(viewport={"width": 1360, "height": 1000})
    opened = context.new_page()
    opened.set_default_timeout(30_000)
    script_errors = []
    opened.on("pageerror", lambda error: script_errors.append(error))
    opened.goto(f"{server.url}/playground")
    opened.fill("#api-key", KEY)
    yield opened
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    opened.evaluate("window.scrollTo(0, 0)")  # sticky panels drawn where they sit, not where a test scrolled
    opened.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert not script_errors, script_errors


def open_endpoint(page, slug: str) -> None:
    page.locator(f'#endpoints [data-slug="{slug}"]').click()
    expect(page.locator("#endpoint-title")).to_contain_text(slug)


def is_v1(slug: str):
    return lambda response: response.request.method == "POST" and response.url.endswith(f"/v1/{slug}")


# -- served by the app ---------------------------------------------------------------------------


def test_page_is_served_offline_and_left_out_of_the_schema(server):
    redirect = httpx.get(f"{server.url}/playground")
    assert redirect.status_code == 307 and redirect.headers["location"] == "playground/"
    page = httpx.get(f"{server.url}/playground/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["x-weights-profile"] == "tiny"
    for asset, kind in (("playground.js", "javascript"), ("playground.css", "text/css")):
        response = httpx.get(f"{server.url}/playground/{asset}")
        assert response.status_code == 200 and kind in response.headers["content-type"], asset
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert not [path for path in paths if path.startswith("/playground")]
    # The server is often offline: nothing may be loaded from another origin.
    for path in PLAYGROUND_DIR.iterdir():
        text = path.read_text()
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), path.name
        assert "url(" not in text and "@import" not in text, path.name


# -- in the browser ------------------------------------------------------------------------------


@needs_chromium
def test_expression_editor_slider_change_shows_a_new_image(page):
    expect(page.locator("#tiny-banner")).to_be_visible()
    open_endpoint(page, "expression-editor")
    expect(page.locator("#field-smile")).to_have_attribute("max", "1.3")
    expect(page.locator("#field-sample_parts option")).to_have_count(5)
    page.set_input_files("#field-image", upload("astronaut.png", "image/png", ASTRONAUT_PNG))
    with page.expect_response(is_v1("expression-editor")) as first:
        page.click("#run-v1")
    assert first.value.status == 200
    image = page.locator("#output img")
    page.wait_for_function("() => document.querySelector('#output img').naturalWidth > 0")
    first_src = image.get_attribute("src")
    first_pixels = shown_image(page)

    sent = []
    page.on("request", lambda r: sent.append(r.post_data_json) if r.url.endswith("/v1/expression-editor") else None)
    with page.expect_response(is_v1("expression-editor"), timeout=60_000) as second:
        # A drag: the slider's input events arrive faster than the debounce, so one request goes out.
        page.evaluate("""() => {
            const slider = document.getElementById('field-smile');
            for (const value of ['-0.3', '0.2', '0.8', '1.3']) {
                slider.value = value;
                slider.dispatchEvent(new Event('input', { bubbles: true }));
            }
        }""")
    assert second.value.status == 200
    expect(image).not_to_have_attribute("src", first_src)
    page.wait_for_function("() => document.querySelector('#output img').naturalWidth > 0")
    assert [body["smile"] for body in sent] == [1.3]
    assert (shown_image(page) != first_pixels).any()
    expect(page.locator("#output a.download")).to_have_attribute("download", re.compile(r"\.png$"))
    expect(page.locator("#status")).to_contain_text("credits left")

    curl = page.locator("#snippet-curl").text_content()
    assert f"{page.url.split('/playground')[0]}/v1/expression-editor" in curl
    assert "base64 < 'astronaut.png'" in curl and '"smile": 1.3' in curl and KEY not in curl
    page.click('.snippet-tab[data-snippet="sdk"]')
    sdk = page.locator("#snippet-sdk").text_content()
    assert 'client.run_sync(\n    "expression-editor",' in sdk and 'image=b64("astronaut.png")' in sdk
    assert "smile=1.3," in sdk


@needs_chromium
def test_sadtalker_through_v2_plays_the_video(page):
    open_endpoint(page, "sadtalker")
    page.set_input_files("#field-input_image", upload("astronaut.png", "image/png", ASTRONAUT_PNG))
    page.set_input_files("#field-input_audio", upload("speech.wav", "audio/wav", SPEECH_WAV))
    expect(page.locator('[data-field="input_audio"] audio')).to_be_visible()
    page.select_option("#field-preprocess", "crop")
    page.uncheck("#field-enhancer")
    page.fill("#field-seed", "7")
    with page.expect_response(lambda r: r.url.endswith("/v2/sadtalker")) as submitted:
        page.click("#run-v2")
    assert submitted.value.status == 200
    expect(page.locator("#progress-text")).to_contain_text(re.compile("queued|processing"))
    video = page.locator("#output video")
    expect(video).to_be_attached(timeout=120_000)
    expect(page.locator("#progress")).to_be_hidden()
    page.wait_for_function("() => { const v = document.querySelector('#output video');"
                           " return v.readyState >= 1 && v.duration > 0; }")
    video.evaluate("v => { v.muted = true; return v.play(); }")
    page.wait_for_function("() => document.querySelector('#output video').currentTime > 0")
    expect(page.locator("#output a.download")).to_have_attribute("download", re.compile(r"\.mp4$"))
    expect(page.locator("#status")).to_contain_text("seed: 7")
    sdk = page.locator("#snippet-sdk").text_content()
    assert 'result = client.run(\n    "sadtalker",' in sdk and 'input_audio=b64("speech.wav")' in sdk


@needs_chromium
def test_bad_inputs_show_the_servers_message(page):
    page.reload()
    expect(page.locator("#api-key")).to_have_value(KEY)  # sessionStorage keeps it for the tab
    open_endpoint(page, "expression-editor")
    page.set_input_files("#field-image", upload("blank.png", "image/png", BLANK_PNG))
    page.click("#run-v1")
    expect(page.locator("#error")).to_have_text(re.compile(r"^HTTP 400: no face detected in image$", re.I))
    with page.expect_response(is_v1("expression-editor")) as rejected:
        page.fill('[name="smile-value"]', "5")  # typed past the slider: the live preview sends it
    assert rejected.value.status == 400
    expect(page.locator("#error")).to_contain_text("smile must be a number between -0.3 and 1.3")


@needs_chromium
def test_a_recording_is_kept_as_a_mono_16_bit_wav(page):
    """Chromium's fake microphone stands in for a voice; the recording is re-encoded as WAV."""
    open_endpoint(page, "sadtalker")
    record = page.locator('[data-field="input_audio"] button.record')
    record.click()
    expect(page.locator('[data-field="input_audio"] .recording')).to_be_visible()
    page.wait_for_timeout(1200)
    record.click()
    expect(page.locator('[data-field="input_audio"] .source')).to_have_text("recording.wav")
    data_uri = page.locator('[data-field="input_audio"] audio').get_attribute("src")
    assert data_uri.startswith("data:audio/wav;base64,")
    with wave.open(io.BytesIO(base64.b64decode(data_uri.split(",", 1)[1]))) as recording:
        assert recording.getnchannels() == 1 and recording.getsampwidth() == 2
        assert recording.getnframes() / recording.getframerate() > 0.8
    assert "base64 < 'recording.wav'" in page.locator("#snippet-curl").text_content()
