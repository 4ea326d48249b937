"""The Ray mode end to end: a local Ray cluster (2 CPUs, no GPU, loopback only) serving the real
expression-editor on the tiny profile with 2 ingress and 2 runner replicas, Redis as the store.

One deployment for the module (starting Ray and the replicas is most of its time): a v1 call; a
v2 job polled through another ingress replica than the one it was submitted to; 50 concurrent
submissions spend exactly 50 credits and no more; a running job cancelled; killing the replica
that runs a job re-runs it (COMPLETED) or, attempts spent, ends it FAILED with the reason.
"""
from __future__ import annotations

import io
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from skimage.data import astronaut

from server.settings import Settings
from tests.scale.conftest import free_port, unavailable
from tests.server.conftest import b64, png_of

REPO = Path(__file__).resolve().parents[2]
SLUG = "expression-editor"
KEY = "SG_0123456789abcdef"
FACE = b64(png_of(np.asarray(Image.fromarray(astronaut()).resize((256, 256)))))
REPLICA = "x-facefoundry-replica"


@pytest.fixture(scope="module")
def ray_serve(redis_url, tiny_weights, tmp_path_factory):
    """(base URL, Redis client) of the deployed application."""
    try:
        import ray
        from ray import serve
    except ImportError:
        unavailable("ray[serve] is not installed (pip install -e .[scale])")
    from server.redis_store import RedisKeyStore, connect
    from server.scale.application import APP_NAME, build_application
    from tests.scale.holding_runner import HoldingRunner

    tmp = tmp_path_factory.mktemp("ray")
    client = connect(redis_url)
    client.flushdb()
    RedisKeyStore(client).add(KEY)
    settings = Settings(
        store=redis_url, weights_root=tiny_weights.parent, weights="tiny", pipelines=[SLUG],
        keys_file=tmp / "keys.json", job_store=tmp / "jobs.sqlite", outputs_dir=tmp / "outputs",
        ray_ingress_replicas=2, ray_num_gpus=0, ray_num_cpus=1, ray_min_replicas=2, ray_max_replicas=2,
        job_lease_s=2, job_max_attempts=2, queue_max=64, request_timeout_s=120, shutdown_grace_s=1,
    )
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}}, log_to_driver=False)
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_application(settings, HoldingRunner), name=APP_NAME, route_prefix="/")
        yield f"http://127.0.0.1:{port}", client
    finally:
        serve.shutdown()
        ray.shutdown()
        client.close()


def submit(url: str, key: str = KEY, request_id: str | None = None) -> httpx.Response:
    headers = {"x-api-key": key, **({"x-request-id": request_id} if request_id else {})}
    return httpx.post(f"{url}/v2/{SLUG}", json={"image": FACE, "smile": 1}, headers=headers, timeout=60)


def terminal(url: str, job_id: str, key: str = KEY, limit: float = 90) -> dict:
    deadline = time.time() + limit
    while time.time() < deadline:
        body = httpx.get(f"{url}/v2/requests/{job_id}/status", headers={"x-api-key": key}, timeout=30).json()
        if body["status"] in ("COMPLETED", "FAILED"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"{job_id} did not finish: {body}")


def test_a_v1_call_runs_on_a_runner_replica(ray_serve):
    url, _ = ray_serve
    response = httpx.post(f"{url}/v1/{SLUG}", json={"image": FACE, "smile": 1},
                          headers={"x-api-key": KEY}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png" and response.headers["x-seed-value"].isdigit()
    assert float(response.headers["X-remaining-credits"]) == 1_000_000  # the unlimited key's figure
    assert len(response.headers.get_list("x-request-id")) == 1  # Serve's proxy sets it too


def test_a_job_submitted_through_one_ingress_replica_is_answered_by_another(ray_serve):
    url, _ = ray_serve
    submitted = submit(url)
    assert submitted.status_code == 200, submitted.text
    job_id, first = submitted.json()["request_id"], submitted.headers[REPLICA]
    assert terminal(url, job_id)["status"] == "COMPLETED"
    for _ in range(60):  # Serve's proxy spreads requests over the replicas
        result = httpx.get(f"{url}/v2/requests/{job_id}", headers={"x-api-key": KEY}, timeout=30)
        if result.headers[REPLICA] != first:
            break
    else:
        raise AssertionError("every poll was answered by the replica that took the job")
    assert result.status_code == 200 and result.json()["status"] == "COMPLETED"
    image = httpx.get(result.json()["output"], timeout=30)
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(image.content)) as decoded:
        assert decoded.size == (256, 256)


def test_concurrent_submissions_spend_exactly_the_credits_there_are(ray_serve):
    url, client = ray_serve
    from server.redis_store import RedisKeyStore

    key = "SG_5a6b7c8d9e0f1a2b"
    RedisKeyStore(client).add(key, credits=50)
    with ThreadPoolExecutor(55) as pool:
        answers = list(pool.map(lambda _: submit(url, key), range(55)))
    accepted = [a.json()["request_id"] for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code != 200]
    assert len(accepted) == 50
    assert {(a.status_code, a.json()["error"]) for a in refused} == {(406, "Insufficient credits")}
    assert {terminal(url, job_id, key)["status"] for job_id in accepted} == {"COMPLETED"}
    credits = httpx.get(f"{url}/v1/get-user-credits", headers={"x-api-key": key}, timeout=30).json()["credits"]
    assert credits == 0.0


def test_cancelling_a_running_job_stops_it_uncharged(ray_serve):
    url, client = ray_serve
    from server.redis_store import RedisKeyStore

    key = "SG_1b2c3d4e5f60718a"
    RedisKeyStore(client).add(key, credits=3)
    job_id = submit(url, key, request_id=f"hold1-{uuid.uuid4()}").json()["request_id"]
    running_replica(client, job_id)
    answer = httpx.post(f"{url}/v2/requests/{job_id}/cancel", headers={"x-api-key": key}, timeout=30)
    assert answer.status_code == 202 and answer.json()["status"] == "PROCESSING"
    body = terminal(url, job_id, key)
    assert (body["status"], body["error"]) == ("FAILED", "the request was cancelled")
    assert httpx.get(f"{url}/v1/get-user-credits", headers={"x-api-key": key}, timeout=30).json()["credits"] == 3.0


def running_replica(client, job_id: str, other_than: str = "", limit: float = 60) -> str:
    """The actor name of the replica running ``job_id`` (recorded by its claim)."""
    from server.redis_store import RedisJobStore

    store = RedisJobStore(client)
    deadline = time.time() + limit
    while time.time() < deadline:
        row = store.get(job_id)
        runner = store.runner(job_id)
        if row["status"] == "PROCESSING" and runner and runner != other_than:
            return runner
        time.sleep(0.05)
    raise AssertionError(f"{job_id} never ran: {store.get(job_id)}")


def kill(name: str) -> None:
    import ray

    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)


def test_killing_the_replica_that_runs_a_job_reruns_it_then_fails_it_with_the_reason(ray_serve):
    url, client = ray_serve
    rerun = submit(url, request_id=f"hold1-{uuid.uuid4()}").json()["request_id"]
    kill(running_replica(client, rerun))
    assert terminal(url, rerun)["status"] == "COMPLETED"
    result = httpx.get(f"{url}/v2/requests/{rerun}", headers={"x-api-key": KEY}, timeout=30).json()
    assert result["metrics"]["retry_count"] == 1

    spent = submit(url, request_id=f"hold2-{uuid.uuid4()}").json()["request_id"]
    first = running_replica(client, spent)
    kill(first)
    kill(running_replica(client, spent, other_than=first))
    body = terminal(url, spent)
    assert body["status"] == "FAILED"
    assert body["error"] == "the replica running this job stopped (attempt 2 of 2); submit it again"
