"""The Redis store against a real redis-server: the JobStore contract the engine's restart logic
reads (queue order, attempts, requeue), the leases and tokens that let replicas take over each
other's jobs, and keys, credits and rate limits under concurrency."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from pipelines.expression_editor.params import Params
from server.jobs import COMPLETED, FAILED, PROCESSING, QUEUED, Job
from server.redis_store import RedisJobStore, RedisKeyStore, RedisRateLimiter

PARAMS = Params(aaa=0, eee=0, woo=0, smile=1, wink=0, blink=0, eyebrow=0, pupil_x=0, pupil_y=0, rotate_pitch=0,
                rotate_yaw=0, rotate_roll=0, sample_parts="OnlyExpression", output="full")
KEY = "SG_0123456789abcdef"


def job(job_id: str, created: float, slug: str = "expression-editor", **extra) -> Job:
    return Job(id=job_id, slug=slug, params=PARAMS, seed=7, fmt="png", quality=90, key_id="k1", cost=1.5,
               created=created, deadline=created + 300, persistent=True, request_id=f"req-{job_id}", **extra)


@pytest.fixture
def store(redis_client):
    return RedisJobStore(redis_client, prefix="t:")


def test_rows_read_back_as_the_sqlite_store_writes_them(store):
    created = 1_790_000_000.123456
    store.insert(job("a", created, webhook="https://hooks.example/x", public_base="https://faces.example"),
                 expires=created + 3600)
    row = store.get("a")
    assert row["created"] == created and row["expires"] == created + 3600  # exact, not rounded by Lua
    assert (row["status"], row["attempts"], row["seed"], row["quality"], row["cost"]) == (QUEUED, 0, 7, 90, 1.5)
    assert (row["started"], row["finished"], row["error"], row["result"]) == (None, None, None, None)
    assert row["params"] == '{"aaa": 0, "eee": 0, "woo": 0, "smile": 1, "wink": 0, "blink": 0, "eyebrow": 0, ' \
                            '"pupil_x": 0, "pupil_y": 0, "rotate_pitch": 0, "rotate_yaw": 0, "rotate_roll": 0, ' \
                            '"sample_parts": "OnlyExpression", "output": "full"}'
    assert row["webhook"] == '{"url": "https://hooks.example/x", "base": "https://faces.example"}'
    assert store.get("missing") is None


def test_a_restart_finds_queued_and_running_jobs_in_order_with_their_attempts(store, redis_client):
    for index, job_id in enumerate(["first", "second", "third"]):
        store.insert(job(job_id, 1000.0 + index), expires=9e9)
    store.mark_processing("second", 1010.0)
    store.complete("third", 1011.0, {"files": []})

    restarted = RedisJobStore(redis_client, prefix="t:")  # what a new server process opens
    rows = restarted.unfinished()
    assert [(r["id"], r["status"], r["attempts"]) for r in rows] == [("first", QUEUED, 0), ("second", PROCESSING, 1)]
    restarted.requeue("second")
    restarted.mark_processing("second", 1020.0)
    assert restarted.get("second")["attempts"] == 2
    assert restarted.get("second")["started"] == 1020.0
    assert restarted.depth("expression-editor") == 1  # "first" still waits


def test_a_job_ends_once(store):
    store.insert(job("a", 1.0), expires=9e9)
    store.mark_processing("a", 2.0)
    assert store.complete("a", 3.0, {"files": [1]})
    assert not store.fail("a", 4.0, "too late")
    row = store.get("a")
    assert (row["status"], row["finished"], row["error"]) == (COMPLETED, 3.0, None)
    assert store.unfinished() == []


def test_only_the_token_holder_claims_and_finishes(store):
    store.insert(job("a", 1.0), expires=9e9, token="mine")
    assert store.claim("a", "theirs", 2.0, runner="r2", lease_until=20.0) is None
    assert store.claim("a", "mine", 2.0, runner="r1", lease_until=20.0) == 1
    assert store.claim("a", "mine", 2.5, runner="r1", lease_until=20.0) is None  # already running
    assert store.runner("a") == "r1"
    assert not store.complete("a", 3.0, {}, token="theirs")
    assert store.complete("a", 3.0, {}, token="mine")


def test_a_lapsed_running_job_runs_again_until_its_attempts_are_spent(store):
    store.insert(job("a", 1.0), expires=9e9, token="t1")
    store.claim("a", "t1", 2.0, runner="r1", lease_until=10.0)
    assert store.renew("a", "t1", PROCESSING, 12.0)
    assert store.lapsed(11.0) == []
    assert store.reclaim("a", now=11.0, lease_until=30.0, max_attempts=2, reason="gone")[0] == ""  # still leased

    assert store.lapsed(13.0) == ["a"]
    action, token = store.reclaim("a", now=13.0, lease_until=30.0, max_attempts=2, reason="gone")
    assert action == "dispatch" and store.get("a")["status"] == QUEUED
    assert not store.renew("a", "t1", QUEUED, 40.0)  # the old holder lost it
    assert store.claim("a", "t1", 14.0, runner="r1", lease_until=40.0) is None
    assert store.claim("a", token, 14.0, runner="r2", lease_until=40.0) == 2

    action, _ = store.reclaim("a", now=41.0, lease_until=60.0, max_attempts=2, reason="the runner stopped")
    row = store.get("a")
    assert action == "failed" and (row["status"], row["error"], row["finished"]) == (FAILED, "the runner stopped", 41.0)
    assert store.lapsed(1e12) == [] and store.unfinished() == []


def test_a_holder_that_saw_its_runner_die_takes_the_job_back_at_once(store):
    store.insert(job("a", 1.0), expires=9e9, token="t1")
    store.claim("a", "t1", 2.0, runner="r1", lease_until=1e12)
    assert store.reclaim("a", now=3.0, lease_until=50.0, max_attempts=3, reason="x", holder="other")[0] == ""
    action, token = store.reclaim("a", now=3.0, lease_until=50.0, max_attempts=3, reason="x", holder="t1")
    assert action == "dispatch" and store.claim("a", token, 4.0, runner="r2", lease_until=60.0) == 2


def test_a_queued_job_whose_dispatcher_vanished_is_dispatched_again_without_an_attempt(store):
    store.insert(job("a", 1.0), expires=9e9, token="t1")
    store.renew("a", "t1", QUEUED, 5.0)
    action, _ = store.reclaim("a", now=6.0, lease_until=20.0, max_attempts=1, reason="x")
    assert action == "dispatch" and store.get("a")["attempts"] == 0


def test_cancel(store):
    store.insert(job("queued", 1.0), expires=9e9)
    store.insert(job("running", 2.0), expires=9e9)
    store.mark_processing("running", 3.0)
    assert store.cancel("queued", 4.0, "the request was cancelled") == FAILED
    assert store.get("queued")["error"] == "the request was cancelled"
    assert store.cancel("running", 4.0, "the request was cancelled") == PROCESSING
    assert store.cancel_requested("running") and not store.cancel_requested("missing")
    assert store.cancel("queued", 5.0, "again") == ""
    assert store.depth("expression-editor") == 0


def test_expiry_forgets_jobs_and_their_inputs(store):
    store.insert(job("old", 1.0), expires=100.0)
    store.insert(job("new", 2.0), expires=300.0)
    store.save_inputs("old", {"image": b"\x89PNG\x00\xff"}, expires=time.time() + 60)
    assert store.read_inputs("old") == {"image": b"\x89PNG\x00\xff"}
    assert store.expire(100.0) == []  # strictly older, as in SQLite
    assert store.expire(200.0) == ["old"]
    assert store.get("old") is None and store.read_inputs("old") == {}
    assert [r["id"] for r in store.unfinished()] == ["new"]


@pytest.fixture
def keys(redis_client):
    return RedisKeyStore(redis_client, prefix="t:")


def test_keys_lookup_revoke_and_credit(keys):
    entry = keys.add(KEY, credits=10, models=["sadtalker"], rpm=5)
    with pytest.raises(ValueError):
        keys.add(KEY)
    found = keys.find(KEY)
    assert (found.id, found.credits, found.models, found.rpm) == (entry.id, 10.0, ["sadtalker"], 5)
    assert found.hint == "SG_01…"
    assert keys.find("SG_fedcba9876543210") is None
    assert keys.credit(entry.id, 2.5).credits == 12.5
    keys.revoke(KEY)
    assert keys.find(KEY) is None and keys.get(entry.id).revoked
    unlimited = keys.add("SG_aa11bb22cc33dd44")
    assert keys.reserve(unlimited.id, 1e9) and keys.get(unlimited.id).credits is None
    keys.refund(unlimited.id, 3)
    assert keys.get(unlimited.id).credits is None  # a refund leaves an unlimited key unlimited
    assert keys.credit("SG_aa11bb22cc33dd44", 4).credits == 4.0  # `keys credit` gives it a balance
    assert [k.id for k in keys.all()] == sorted([entry.id, unlimited.id])


def test_concurrent_reservations_never_overdraw(keys):
    entry = keys.add(KEY, credits=50)
    start = threading.Barrier(16)

    def reserve_many(_):
        start.wait()
        return sum(keys.reserve(entry.id, 1.0) for _ in range(10))

    with ThreadPoolExecutor(16) as pool:
        taken = sum(pool.map(reserve_many, range(16)))
    assert taken == 50 and keys.get(entry.id).credits == 0.0
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: keys.refund(entry.id, 0.5), range(20)))
    assert keys.get(entry.id).credits == 10.0


def test_rate_limit_window_is_shared(redis_client):
    one, other = RedisRateLimiter(redis_client, prefix="t:"), RedisRateLimiter(redis_client, prefix="t:")
    assert one.admit("k", 2, now=1000.0) is None
    assert other.admit("k", 2, now=1001.0) is None
    assert one.admit("k", 2, now=1002.0) == 1060.0
    assert other.admit("k", 2, now=1060.5) is None  # the first call left the window
    assert one.admit("other-key", 2, now=1002.0) is None
