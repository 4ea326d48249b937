"""Slow media sources cannot delay other requests (issue 13, "slow-drip media URLs").

A local origin on 127.0.0.1 answers input URLs with headers and then one byte every 0.25 s (or
nothing at all). Two dozen requests point at it at once, more than the fetch slots and the
waiting room hold; meanwhile honest requests (health, an inline-image v1 run through the model
worker, credits) must answer within ``BOUND_S``, and every slow request must end, refused,
within the fetch deadline. Loopback only, every loop bounded in count and time.
"""
from __future__ import annotations

import concurrent.futures
import http.server
import statistics
import time

import httpx

from tests.server.conftest import FACE, HEADERS, b64, local_origin, running

BOUND_S = 1.5  # honest requests answer in ~10-50 ms here; the bound leaves room for a busy CI core
DRIP_INTERVAL_S = 0.25
DRIP_MAX_BYTES = 60  # the origin gives up after 15 s even if nobody hangs up
SLOW_REQUESTS = 24
TOTAL_S, MIN_RATE, SLOTS, WAITING = 3.0, 1024.0, 4, 8


class DripHandler(http.server.BaseHTTPRequestHandler):
    """/drip: a PNG promised, sent one byte at a time; /silent: headers, then nothing."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            for _ in range(DRIP_MAX_BYTES):
                if self.path == "/drip":
                    self.wfile.write(b"\x89")
                    self.wfile.flush()
                time.sleep(DRIP_INTERVAL_S)
        except OSError:  # the server hung up: what it should do
            pass

    def log_message(self, *args):
        pass


def timed(call) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = call()
    return time.perf_counter() - started, response


def honest_requests(client: httpx.Client) -> list[tuple[str, float, int]]:
    calls = {
        "health": lambda: client.get("/health"),
        "v1 inline image": lambda: client.post("/v1/face-to-sticker", json={"image": b64(FACE)}),
        "credits": lambda: client.get("/v1/get-user-credits"),
    }
    answers = []
    for name, call in calls.items():
        elapsed, response = timed(call)
        answers.append((name, elapsed, response.status_code))
    return answers


def test_slow_sources_do_not_delay_other_requests(tmp_path):
    with local_origin(DripHandler) as origin, running(
        tmp_path, fetch_total_timeout_s=TOTAL_S, fetch_min_bytes_per_s=MIN_RATE, fetch_read_timeout_s=5,
        fetch_concurrency=SLOTS, fetch_queue_max=WAITING,
    ) as server, httpx.Client(base_url=server.url, headers=HEADERS, timeout=60,
                              limits=httpx.Limits(max_connections=SLOW_REQUESTS + 1)) as client:
        # One client for everything: building a client loads the CA roots, CPU that would
        # compete with the server thread (same process) and blur the measurement.
        baseline = [t for _, t, _ in honest_requests(client)]
        pool = concurrent.futures.ThreadPoolExecutor(SLOW_REQUESTS)
        slow = [
            pool.submit(timed, lambda path=("/drip" if i % 2 else "/silent"): client.post(
                "/v1/face-to-sticker", json={"image": f"{origin}{path}"}))
            for i in range(SLOW_REQUESTS)
        ]
        time.sleep(0.3)  # the slots are taken and the waiting room is full
        during = []
        deadline = time.perf_counter() + TOTAL_S
        while time.perf_counter() < deadline and len(during) < 60:
            during += honest_requests(client)
        results = [future.result(timeout=60) for future in slow]
        pool.shutdown()

        assert all(status == 200 for _, _, status in during), during
        delays = [t for _, t, _ in during]
        statuses = sorted(r.status_code for _, r in results)
        print(f"\nslow-drip: {SLOW_REQUESTS} slow requests -> {statuses.count(400)} refused as slow (400), "
              f"{statuses.count(429)} turned away (429); slowest took {max(t for t, _ in results):.2f} s")
        print(f"honest requests during the drip: {len(during)}, median {statistics.median(delays) * 1000:.0f} ms, "
              f"max {max(delays) * 1000:.0f} ms (before: max {max(baseline) * 1000:.0f} ms; bound {BOUND_S:g} s)")
        assert max(delays) < BOUND_S
        assert set(statuses) <= {400, 429} and statuses.count(400) >= SLOTS
        for elapsed, response in results:
            if response.status_code == 400:
                assert "image:" in response.json()["error"]
                assert any(text in response.json()["error"] for text in ("slower than", "longer than"))
        # A request waits at most TOTAL_S for a slot, then fetches for at most TOTAL_S.
        assert max(t for t, _ in results) < 2 * TOTAL_S + 1.0
