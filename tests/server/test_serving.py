"""The serving core (issue 12) and the honest answers of issue 9: loading that never stalls another
endpoint, credits that cannot be overdrawn, cancellation, graceful shutdown, signed webhooks,
request ids, Retry-After, 501 for what is not built."""
from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import logging
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from server import webhooks
from server.auth import KeyStore
from server.logs import REQUEST_ID, JsonFormatter, RequestIdFilter
from server.middleware import is_quiet
from tests.server import fake_pipeline
from tests.server.conftest import FACE, HEADERS, KEY, b64, free_port, local_origin, running, wait_terminal
from tests.server.fake_server import REPO
from tests.server.test_restart import start

STICKER = {"image": b64(FACE)}
EDIT = {"image": b64(FACE)}


def post(server, path, body, headers=HEADERS, **kwargs):
    return httpx.post(f"{server.url}{path}", json=body, headers=headers, timeout=30, **kwargs)


def credits(server) -> float:
    return httpx.get(f"{server.url}/v1/get-user-credits", headers=HEADERS).json()["credits"]


def wait_until(condition, limit: float = 10.0) -> None:
    deadline = time.time() + limit
    while not condition():
        if time.time() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


# -- loading ----------------------------------------------------------------------------------


@pytest.mark.parametrize("lazy", [True, False])
def test_slow_load_of_one_endpoint_does_not_delay_another(tmp_path, lazy):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "face-to-sticker.slow-load").write_text("3")
    with running(tmp_path, lazy=lazy) as server:
        sticker = ThreadPoolExecutor(1).submit(post, server, "/v1/face-to-sticker", STICKER)
        wait_until(lambda: server.engine.pools[0].state("face-to-sticker")[0] == "loading")
        started = time.perf_counter()
        assert post(server, "/v1/expression-editor", EDIT).status_code == 200
        assert time.perf_counter() - started < 2.0  # the sticker load takes 3 s
        ready = httpx.get(f"{server.url}/ready")
        assert ready.status_code == 503 and "retry-after" in ready.headers
        assert ready.json()["loading"] == ["face-to-sticker"]
        # A v2 job for the loading endpoint is queued at once and runs after the load.
        started = time.perf_counter()
        queued = post(server, "/v2/face-to-sticker", STICKER)
        assert queued.status_code == 200 and time.perf_counter() - started < 1.0
        # The v1 request for the loading endpoint waited for the load, then ran.
        assert sticker.result(timeout=20).status_code == 200
        assert wait_terminal(queued.json()["status_url"]).json()["status"] == "COMPLETED"
        assert httpx.get(f"{server.url}/ready").status_code == 200


def test_idle_endpoint_is_unloaded_and_loads_again(tmp_path):
    with running(tmp_path, idle_unload_s=0.2) as server:
        assert post(server, "/v1/face-to-sticker", STICKER).status_code == 200
        fake_pipeline.FREED.clear()
        server.engine.sweep(now=time.time() + 1)
        assert server.engine.pools[0].state("face-to-sticker")[0] == "unloaded (idle)"
        assert "face-to-sticker" in fake_pipeline.FREED
        assert httpx.get(f"{server.url}/ready").status_code == 200
        assert post(server, "/v1/face-to-sticker", STICKER).status_code == 200
        assert server.engine.pools[0].state("face-to-sticker")[0] == "loaded"


# -- fairness and money -----------------------------------------------------------------------


def test_short_job_does_not_wait_behind_another_endpoints_long_job(tmp_path):
    with running(tmp_path) as server:
        long = ThreadPoolExecutor(1).submit(post, server, "/v1/face-to-sticker", dict(STICKER, prompt="sleep:3"))
        assert fake_pipeline.RUNNING.wait(10)
        started = time.perf_counter()
        assert post(server, "/v1/expression-editor", EDIT).status_code == 200
        assert time.perf_counter() - started < 2.0
        assert long.result(timeout=20).status_code == 200


def test_ten_concurrent_calls_with_three_credits_exactly_three_succeed(tmp_path):
    with running(tmp_path, key_credits=3) as server:
        with ThreadPoolExecutor(10) as pool:
            codes = list(pool.map(lambda _: post(server, "/v1/expression-editor", EDIT).status_code, range(10)))
        assert sorted(codes) == [200] * 3 + [406] * 7
        assert credits(server) == 0


def test_v1_client_that_disconnects_is_stopped_and_not_charged(tmp_path):
    with running(tmp_path, key_credits=10) as server:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.url}/v1/face-to-sticker", json=dict(STICKER, prompt="sleep:5"), headers=HEADERS,
                       timeout=0.5)
        # Stopped at a stage boundary well before its 5 s: the worker is free again.
        wait_until(lambda: not fake_pipeline.RUNNING.is_set(), limit=2.5)
        assert credits(server) == 10
        assert 'facefoundry_job_failures_total{endpoint="face-to-sticker",reason="cancelled"} 1.0' in \
            httpx.get(f"{server.url}/metrics").text


# -- v2 cancel --------------------------------------------------------------------------------


def test_cancel_of_a_queued_job_never_runs_it(tmp_path):
    ran = tmp_path / "ran"
    with running(tmp_path, key_credits=10) as server:
        busy = ThreadPoolExecutor(1).submit(post, server, "/v1/face-to-sticker", dict(STICKER, prompt="sleep:1"))
        assert fake_pipeline.RUNNING.wait(10)
        queued = post(server, "/v2/face-to-sticker", dict(STICKER, prompt=f"hang-once:{ran}")).json()
        cancel = httpx.post(f"{server.url}/v2/requests/{queued['request_id']}/cancel", headers=HEADERS)
        assert cancel.status_code == 200
        assert cancel.json() == {"request_id": queued["request_id"], "status": "FAILED",
                                 "error": "the request was cancelled"}
        assert busy.result(timeout=20).status_code == 200
        status = wait_terminal(queued["status_url"])
        assert status.status_code == 422 and status.json()["error"] == "the request was cancelled"
        time.sleep(0.3)
        assert not ran.exists()
        assert credits(server) == 9  # the busy call only
        again = httpx.post(f"{server.url}/v2/requests/{queued['request_id']}/cancel", headers=HEADERS)
        assert again.status_code == 409


def test_cancel_of_a_running_job_stops_it_at_the_next_stage(tmp_path):
    with running(tmp_path, key_credits=10) as server:
        job = post(server, "/v2/face-to-sticker", dict(STICKER, prompt="sleep:5")).json()
        assert fake_pipeline.RUNNING.wait(10)
        cancel = httpx.post(f"{server.url}/v2/requests/{job['request_id']}/cancel", headers=HEADERS)
        assert cancel.status_code == 202 and cancel.json()["status"] == "PROCESSING"
        status = wait_terminal(job["status_url"], limit=2.5)
        assert status.json()["error"] == "the request was cancelled"
        assert credits(server) == 10


def test_v2_status_of_a_running_job_reports_its_progress(tmp_path):
    with running(tmp_path) as server:
        job = post(server, "/v2/face-to-sticker", dict(STICKER, prompt="sleep:3")).json()
        assert fake_pipeline.RUNNING.wait(10)
        wait_until(lambda: "progress" in httpx.get(job["status_url"], headers=HEADERS).json())
        status = httpx.get(job["status_url"], headers=HEADERS).json()
        assert status["status"] == "PROCESSING"
        assert status["progress"]["total"] == 60 and 1 <= status["progress"]["done"] <= 60
        assert "progress" not in wait_terminal(job["status_url"], limit=10).json()


def test_another_keys_job_cannot_be_cancelled(tmp_path):
    with running(tmp_path) as server:
        other = "SG_" + "f3a9c2e5b8d1f467"
        KeyStore(server.settings.keys_file).add(other)
        job = post(server, "/v2/face-to-sticker", STICKER).json()
        refused = httpx.post(f"{server.url}/v2/requests/{job['request_id']}/cancel", headers={"x-api-key": other})
        assert refused.status_code == 404


# -- webhooks ---------------------------------------------------------------------------------


class Receiver(http.server.BaseHTTPRequestHandler):
    calls: list[tuple[dict, bytes]] = []
    answers: list[int] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        Receiver.calls.append((dict(self.headers), body))
        self.send_response(Receiver.answers.pop(0) if Receiver.answers else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_receiver_on_allowlisted_loopback_gets_a_signed_call(tmp_path, monkeypatch):
    monkeypatch.setattr(webhooks, "FIRST_RETRY_S", 0.05)
    Receiver.calls, Receiver.answers = [], [500]  # the first call fails: it is retried
    with local_origin(Receiver) as receiver, \
            running(tmp_path, webhook_secret="hook-secret", fetch_allow=["127.0.0.1/32"]) as server:
        job = post(server, "/v2/face-to-sticker", dict(STICKER, webhook=f"{receiver}/hook"),
                   headers={**HEADERS, "X-Request-ID": "trace-42"}).json()
        assert wait_terminal(job["status_url"]).json()["status"] == "COMPLETED"
        wait_until(lambda: len(Receiver.calls) == 2)
    headers, body = Receiver.calls[-1]
    headers = {k.lower(): v for k, v in headers.items()}
    stamp, digest = (part.split("=", 1)[1] for part in headers["x-facefoundry-signature"].split(","))
    expected = hmac.new(b"hook-secret", f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(digest, expected) and abs(int(stamp) - time.time()) < 60
    payload = json.loads(body)
    assert payload["event"] == "completed" and payload["request_id"] == job["request_id"]
    assert payload["status"] == "COMPLETED" and payload["images"][0]["url"].startswith(server.url)
    assert headers["x-request-id"] == "trace-42"


def test_webhook_to_a_forbidden_address_or_without_secret_is_refused(tmp_path):
    with running(tmp_path, webhook_secret="hook-secret", fetch_allow=[]) as server:
        refused = post(server, "/v2/face-to-sticker", dict(STICKER, webhook="http://127.0.0.1:9/hook"))
        assert refused.status_code == 400 and "webhook" in refused.json()["error"]
        metadata = post(server, "/v2/face-to-sticker", dict(STICKER, webhook="http://metadata.test/hook"))
        assert metadata.status_code == 400
    with running(tmp_path / "nosecret") as server:
        unsigned = post(server, "/v2/face-to-sticker", dict(STICKER, webhook="https://images.test/hook"))
        assert unsigned.status_code == 400 and "WEBHOOK_SECRET" in unsigned.json()["error"]


# -- shutdown ---------------------------------------------------------------------------------


def test_sigterm_during_a_v1_request_still_answers_it(tmp_path):
    fake_pipeline.write_markers(tmp_path / "weights")
    KeyStore(tmp_path / "keys.json").add(KEY)
    port = free_port()
    server = start(tmp_path, port, max_attempts=2)
    try:
        url = f"http://127.0.0.1:{port}"
        answer = ThreadPoolExecutor(1).submit(httpx.post, f"{url}/v1/face-to-sticker",
                                              json=dict(STICKER, prompt="sleep:2"), headers=HEADERS, timeout=30)
        wait_until(lambda: 'facefoundry_queue_wait_seconds_count{endpoint="face-to-sticker"} 1.0'
                   in httpx.get(f"{url}/metrics").text)
        server.send_signal(signal.SIGTERM)
        response = answer.result(timeout=30)
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        # uvicorn re-raises the signal once it has shut down, so the exit status names SIGTERM.
        assert server.wait(20) in (0, -signal.SIGTERM)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


# -- honest answers (issue 9) -----------------------------------------------------------------


def test_endpoint_not_built_is_501_before_auth_and_listed_by_ready(tmp_path, monkeypatch):
    from pipelines import registry

    monkeypatch.setitem(registry.BUILT, "consistent-character", False)
    with running(tmp_path) as server:
        message = {"error": "consistent-character is not available in this version of facefoundry"}
        for path in ("/v1/consistent-character", "/v2/consistent-character", "/consistent-character"):
            response = httpx.post(f"{server.url}{path}", content=b"not even json")  # no key, no body
            assert response.status_code == 501 and response.json() == message
            assert response.headers["x-request-id"]
        ready = httpx.get(f"{server.url}/ready")
        assert ready.status_code == 200
        assert ready.json()["pipelines"]["consistent-character"]["state"] == "not built"


def test_generation_time_only_when_something_was_generated(api):
    generated = post(api, "/v1/face-to-sticker", dict(STICKER, prompt="sleep:0.2"))
    assert float(generated.headers["X-generation-time"]) >= 0.2
    account = httpx.get(f"{api.url}/v1/get-user-credits", headers=HEADERS)
    assert account.status_code == 200 and "x-generation-time" not in account.headers
    assert "x-remaining-credits" in account.headers


# -- operations conventions -------------------------------------------------------------------


def test_request_id_is_passed_through_and_on_every_response(api):
    given = {**HEADERS, "X-Request-ID": "client-trace-1"}
    assert post(api, "/v1/face-to-sticker", STICKER, headers=given).headers["x-request-id"] == "client-trace-1"
    submitted = post(api, "/v2/face-to-sticker", STICKER, headers=given)
    assert submitted.headers["x-request-id"] == "client-trace-1"
    assert submitted.json()["request_id"] != "client-trace-1"  # job ids stay unique
    unauthorised = httpx.post(f"{api.url}/v1/face-to-sticker", json=STICKER, headers={"X-Request-ID": "t-2"})
    assert unauthorised.status_code == 401 and unauthorised.headers["x-request-id"] == "t-2"
    for response in (httpx.get(f"{api.url}/nowhere"), post(api, "/v1/face-to-sticker", {"steps": 0})):
        assert response.status_code in (400, 404) and len(response.headers["x-request-id"]) == 36
    own = post(api, "/v2/face-to-sticker", STICKER)
    assert own.headers["x-request-id"] == own.json()["request_id"]
    bad = httpx.get(f"{api.url}/health", headers={"X-Request-ID": "has space"})
    assert bad.headers["x-request-id"] != "has space"


def test_queue_full_429_carries_retry_after(tmp_path):
    with running(tmp_path, queue_max=1) as server:
        busy = ThreadPoolExecutor(1).submit(post, server, "/v1/face-to-sticker", dict(STICKER, prompt="sleep:1.5"))
        assert fake_pipeline.RUNNING.wait(10)
        assert post(server, "/v2/face-to-sticker", STICKER).status_code == 200
        refused = post(server, "/v2/face-to-sticker", STICKER)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
        # Another endpoint's queue is its own.
        assert post(server, "/v2/expression-editor", EDIT).status_code == 200
        assert busy.result(timeout=20).status_code == 200


def test_metrics_a_dashboard_expects(api):
    post(api, "/v1/face-to-sticker", dict(STICKER, prompt="crash"))
    text = httpx.get(f"{api.url}/metrics").text
    for name in ("facefoundry_queue_wait_seconds_bucket", "facefoundry_inference_seconds_bucket",
                 'facefoundry_job_failures_total{endpoint="face-to-sticker",reason="pipeline"}',
                 'facefoundry_pipeline_state{device="cpu",endpoint="face-to-sticker",state="loaded"} 1.0',
                 "facefoundry_gpu_memory_bytes", 'facefoundry_queue_depth{endpoint="sadtalker"}'):
        assert name in text, name


def test_log_lines_carry_the_request_id_and_json_is_one_object_per_line():
    record = logging.LogRecord("facefoundry", logging.INFO, __file__, 1, "ran %s", ("x",), None)
    token = REQUEST_ID.set("trace-7")
    try:
        RequestIdFilter().filter(record)
    finally:
        REQUEST_ID.reset(token)
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "trace-7" and line["message"] == "ran x" and line["level"] == "INFO"


def test_status_polls_are_logged_at_debug():
    assert is_quiet("GET", "/v2/requests/abc/status") and is_quiet("GET", "/v1/requests/abc")
    assert is_quiet("GET", "/health") and not is_quiet("POST", "/v2/face-to-sticker")
    assert not is_quiet("POST", "/v2/requests/abc/cancel")


def test_download_without_arguments_skips_endpoints_not_built(monkeypatch, capsys):
    from pipelines import registry
    from pipelines.weights import download

    monkeypatch.setattr(registry, "BUILT", dict.fromkeys(registry.PIPELINES, False) | {"sadtalker": True})
    assert download.main(["--list"]) == 0
    default = capsys.readouterr().out
    assert download.main(["--list", "sadtalker"]) == 0
    assert default == capsys.readouterr().out
    assert download.main(["--list", "expression-editor"]) == 0  # named: listed although not built
    assert "liveportrait" in capsys.readouterr().out and "liveportrait" not in default


def test_auto_dtype_is_float16_on_cuda_for_the_pipelines_that_declare_it():
    from server.pool import resolved_dtype

    class Half:
        half_precision = True

    class Full:
        pass

    assert resolved_dtype("auto", "cuda:0", Half) == "float16"
    assert resolved_dtype("auto", "cuda:0", Full) == "float32"
    assert resolved_dtype("auto", "cpu", Half) == "float32"
    assert resolved_dtype("bfloat16", "cuda:1", Full) == "bfloat16"


def test_ready_reports_device_dtype_and_onnxruntime_providers_per_endpoint(api):
    report = httpx.get(f"{api.url}/ready").json()
    assert report["ready"] is True and report["reasons"] == {}
    assert report["pipelines"]["sadtalker"]["runtime"] == [{"device": "cpu", "dtype": "float32",
                                                            "onnx_providers": []}]


def test_serve_start_up_log_is_one_format_without_third_party_noise(tmp_path):
    """``facefoundry serve``'s own lines only, each with a request-id slot; no library warnings or
    progress bars (those stay for the CLI tools)."""
    probe = ("import sys, warnings; from server.logs import configure_logging, quiet_third_party; "
             "quiet_third_party(); configure_logging('info', 'text'); "
             "warnings.warn('a library deprecation'); from tqdm import tqdm; list(tqdm(range(3))); "
             "import logging; logging.getLogger('facefoundry').info('started')")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and re.match(r"^\S+ \S+ INFO facefoundry \[-\] started$", lines[0]), done.stderr


def test_a_job_store_written_before_webhooks_opens_with_the_new_columns(tmp_path):
    import sqlite3

    from server.store import SqliteJobStore

    path = tmp_path / "old.sqlite"
    old_schema = SqliteJobStore.SCHEMA.replace(",\n        request_id TEXT, webhook TEXT", "")
    assert "webhook" not in old_schema
    with sqlite3.connect(path) as db:
        db.execute(old_schema)
    store = SqliteJobStore(path)
    try:
        columns = {row[1] for row in store._db.execute("PRAGMA table_info(jobs)")}
        assert {"request_id", "webhook"} <= columns
    finally:
        store.close()


def test_json_log_format_writes_one_object_per_line_with_the_request_id(tmp_path):
    probe = ("from server.logs import configure_logging, REQUEST_ID; configure_logging('info', 'json'); "
             "import logging; REQUEST_ID.set('trace-9'); logging.getLogger('facefoundry.engine').info('ran')")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    line = json.loads(done.stderr.strip())
    assert line["request_id"] == "trace-9" and line["logger"] == "facefoundry.engine" and line["message"] == "ran"


def test_failed_job_calls_its_webhook_with_the_error(tmp_path):
    Receiver.calls, Receiver.answers = [], []
    with local_origin(Receiver) as receiver, \
            running(tmp_path, webhook_secret="hook-secret", fetch_allow=["127.0.0.1/32"]) as server:
        job = post(server, "/v2/face-to-sticker", dict(STICKER, prompt="crash", webhook=f"{receiver}/hook")).json()
        assert wait_terminal(job["status_url"]).json()["status"] == "FAILED"
        wait_until(lambda: len(Receiver.calls) == 1)
    payload = json.loads(Receiver.calls[0][1])
    assert payload["event"] == "failed" and payload["status"] == "FAILED" and "kaboom" in payload["error"]
