"""A real redis-server for the scale-out tests: one per session, on a free loopback port, in a
temporary directory, nothing persisted (``--save '' --appendonly no``), killed at the end.

Under CI (``CI=true``) a missing redis-server fails the tests (the test command installs it);
elsewhere they are skipped with the reason.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI installs it: scripts/setup.sh --test)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not installed (apt-get install redis-server)")
    try:
        import redis
    except ImportError:
        unavailable("the redis package is not installed (pip install -e .[scale])")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(folder), "--logfile", str(folder / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.time() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.time() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(f"redis-server did not start: {(folder / 'redis.log').read_text()}")
            time.sleep(0.05)
    try:
        yield url
    finally:
        client.close()
        process.kill()
        process.wait(10)


@pytest.fixture
def redis_client(redis_url):
    """A client of the session's server, emptied before the test."""
    from server.redis_store import connect

    client = connect(redis_url)
    client.flushdb()
    yield client
    client.close()
