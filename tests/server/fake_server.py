"""``python -m tests.server.fake_server serve ...``: the real CLI with the fake pipelines, for
tests that need a server in its own process (to kill it mid-job); ``spawn`` starts one."""
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from server.cli import main
from tests.server import fake_pipeline

REPO = Path(__file__).resolve().parents[2]


def spawn(port: int, args: list[str], max_attempts: int) -> subprocess.Popen:
    """``serve --port PORT *args`` with the fakes in a process of its own, once ``/health`` answers."""
    command = [sys.executable, "-m", "tests.server.fake_server", "serve", "--port", str(port), *args,
               "--log-level", "warning"]
    env = {**os.environ, "FACEFOUNDRY_JOB_MAX_ATTEMPTS": str(max_attempts), "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, cwd=REPO, env=env)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not start")


def job_status(port: int, job_id: str, headers: dict) -> dict:
    return httpx.get(f"http://127.0.0.1:{port}/v2/requests/{job_id}/status", headers=headers).json()


def wait_for(port: int, job_id: str, states: set[str], headers: dict, limit: float = 20) -> dict:
    """Poll a spawned server until the job is in one of ``states``; its last status."""
    deadline = time.time() + limit
    while time.time() < deadline:
        body = job_status(port, job_id, headers)
        if body["status"] in states:
            return body
        time.sleep(0.1)
    raise AssertionError(f"{job_id} never reached {states}: {body}")


if __name__ == "__main__":
    fake_pipeline.install()
    sys.exit(main(sys.argv[1:]))
