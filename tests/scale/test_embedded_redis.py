"""The embedded server on the Redis store (``serve --store redis://…``): keys managed with the CLI,
and a server killed with a running and a queued v2 job finds both in Redis when it starts again,
re-runs them and charges each once: the SQLite store's restart semantics (tests/server/test_restart.py)."""
from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import httpx

from server.cli import main
from server.redis_store import RedisKeyStore, connect
from tests.scale.conftest import free_port
from tests.server import fake_pipeline
from tests.server.conftest import FACE, b64
from tests.server.fake_server import spawn, wait_for

KEY = "SG_0123456789abcdef"
HEADERS = {"x-api-key": KEY}


def test_keys_commands_manage_the_redis_store(redis_url, redis_client, tmp_path, capsys):
    from server.auth import KeyStore

    chosen = "SG_7c1e94b2d05a8f36"  # the CLI refuses guessable keys
    assert main(["keys", "--store", redis_url, "add", chosen, "--credits", "5", "--rpm", "3"]) == 0
    assert main(["keys", "--store", redis_url, "credit", chosen, "2.5"]) == 0
    assert "7.5 credits" in capsys.readouterr().out
    KeyStore(tmp_path / "keys.json").add("SG_9f8e7d6c5b4a3921", credits=1)
    assert main(["keys", "--store", redis_url, "--keys-file", str(tmp_path / "keys.json"), "import"]) == 0
    assert main(["keys", "--store", redis_url, "--keys-file", str(tmp_path / "keys.json"), "import"]) == 0
    assert "copied 0 keys" in capsys.readouterr().out.splitlines()[-1]
    store = RedisKeyStore(redis_client)
    assert sorted((k.hint, k.credits, k.rpm) for k in store.all()) == [("SG_7c…", 7.5, 3), ("SG_9f…", 1.0, None)]
    assert store.find("SG_9f8e7d6c5b4a3921") is not None  # an imported key authenticates


def start(tmp: Path, port: int, redis_url: str) -> subprocess.Popen:
    return spawn(port, ["--store", redis_url, "--weights-root", str(tmp / "weights"),
                        "--job-store", str(tmp / "jobs.sqlite"), "--outputs-dir", str(tmp / "outputs")], 2)


def test_a_killed_server_reruns_its_jobs_from_redis_and_charges_each_once(redis_url, redis_client, tmp_path):
    fake_pipeline.write_markers(tmp_path / "weights")
    RedisKeyStore(connect(redis_url)).add(KEY, credits=10)
    port = free_port()
    server = start(tmp_path, port, redis_url)
    try:
        url = f"http://127.0.0.1:{port}/v2/face-to-sticker"
        running = httpx.post(url, json={"image": b64(FACE), "prompt": f"hang-once:{tmp_path / 'ran'}"},
                             headers=HEADERS).json()["request_id"]
        queued = httpx.post(url, json={"image": b64(FACE)}, headers=HEADERS).json()["request_id"]
        wait_for(port, running, {"PROCESSING"}, HEADERS)
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()

    server = start(tmp_path, port, redis_url)
    try:
        assert wait_for(port, queued, {"COMPLETED", "FAILED"}, HEADERS)["status"] == "COMPLETED"
        assert wait_for(port, running, {"COMPLETED", "FAILED"}, HEADERS)["status"] == "COMPLETED"
        result = httpx.get(f"http://127.0.0.1:{port}/v2/requests/{running}", headers=HEADERS).json()
        assert result["metrics"]["retry_count"] == 1
        credits = httpx.get(f"http://127.0.0.1:{port}/v1/get-user-credits", headers=HEADERS).json()["credits"]
        assert credits == 8.0
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(20)
