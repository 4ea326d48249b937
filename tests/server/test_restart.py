"""A server killed with queued and running v2 jobs loses none of them on restart."""
from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from server.auth import KeyStore
from tests.server import fake_pipeline
from tests.server.conftest import FACE, HEADERS, KEY, b64, free_port
from tests.server.fake_server import job_status, spawn, wait_for


def start(tmp: Path, port: int, max_attempts: int) -> subprocess.Popen:
    return spawn(port, ["--keys-file", str(tmp / "keys.json"), "--weights-root", str(tmp / "weights"),
                        "--job-store", str(tmp / "jobs.sqlite"), "--outputs-dir", str(tmp / "outputs")],
                 max_attempts)


@pytest.mark.parametrize("max_attempts", [2, 1])
def test_kill_and_restart_keeps_queued_and_running_jobs(tmp_path, max_attempts):
    fake_pipeline.write_markers(tmp_path / "weights")
    KeyStore(tmp_path / "keys.json").add(KEY)
    port = free_port()
    server = start(tmp_path, port, max_attempts)
    try:
        url = f"http://127.0.0.1:{port}/v2/face-to-sticker"
        running = httpx.post(url, json={"image": b64(FACE), "prompt": f"hang-once:{tmp_path / 'ran'}"},
                             headers=HEADERS).json()["request_id"]
        queued = httpx.post(url, json={"image": b64(FACE)}, headers=HEADERS).json()["request_id"]
        wait_for(port, running, {"PROCESSING"}, HEADERS)
        assert job_status(port, queued, HEADERS)["status"] == "QUEUED"
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()

    server = start(tmp_path, port, max_attempts)
    try:
        assert wait_for(port, queued, {"COMPLETED", "FAILED"}, HEADERS)["status"] == "COMPLETED"
        body = wait_for(port, running, {"COMPLETED", "FAILED"}, HEADERS)
        if max_attempts == 2:
            assert body["status"] == "COMPLETED"
            result = httpx.get(f"http://127.0.0.1:{port}/v2/requests/{running}", headers=HEADERS).json()
            assert result["metrics"]["retry_count"] == 1
        else:
            assert body["status"] == "FAILED"
            assert body["error"].startswith("the server stopped while this job was running")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(20)
