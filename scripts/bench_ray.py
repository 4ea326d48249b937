"""Throughput and latency of expression-editor on Ray Serve (1 and 2 replicas) and on the
embedded server, on the tiny profile (issue 14, "Benchmark").

    .venv/bin/python scripts/bench_ray.py [--seconds 10] [--gpu] [--out bench_ray.json]

Each setup is warmed up, then measured twice over the same v1 request: one client in a loop
(latency p50/p95, and the overhead per request: latency minus the server's X-generation-time,
i.e. everything but the pipeline) and ``2 × replicas`` clients at once for ``--seconds``
(requests per second). Needs redis-server on PATH and the scale extra (pip install -e .[scale]).
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SLUG = "expression-editor"
WARMUP_REQUESTS = 3
LATENCY_REQUESTS = 15


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request_body() -> dict:
    from skimage.data import astronaut

    buffer = io.BytesIO()
    Image.fromarray(astronaut()).resize((256, 256)).save(buffer, format="PNG")
    return {"image": base64.b64encode(buffer.getvalue()).decode(), "smile": 1}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def call(client: httpx.Client, url: str, body: dict) -> tuple[float, float]:
    """(latency, server generation time) of one v1 call, in seconds."""
    started = time.perf_counter()
    response = client.post(f"{url}/v1/{SLUG}", json=body, timeout=120)
    latency = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"{response.status_code}: {response.text[:200]}")
    return latency, float(response.headers["X-generation-time"])


def measure(url: str, body: dict, clients: int, seconds: float) -> dict:
    with httpx.Client() as client:
        for _ in range(WARMUP_REQUESTS):
            call(client, url, body)
        samples = [call(client, url, body) for _ in range(LATENCY_REQUESTS)]
    latencies = [latency for latency, _ in samples]
    overheads = [latency - generation for latency, generation in samples]
    done = []
    stop_at = time.perf_counter() + seconds

    def hammer(_):
        with httpx.Client() as client:
            while time.perf_counter() < stop_at:
                call(client, url, body)
                done.append(time.perf_counter())

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(hammer, range(clients)))
    elapsed = time.perf_counter() - started
    return {"p50_s": round(percentile(latencies, 50), 4), "p95_s": round(percentile(latencies, 95), 4),
            "overhead_p50_s": round(statistics.median(overheads), 4),
            "throughput_rps": round(len(done) / elapsed, 3), "clients": clients}


def start_redis(folder: Path) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                                "no", "--dir", str(folder)], stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    return process, f"redis://127.0.0.1:{port}/0"


def embedded(work: Path, body: dict, seconds: float, device: str) -> dict:
    """``facefoundry serve`` in its own process, as deployed (the client's threads would share
    the GIL with an in-process server)."""
    port = free_port()
    args = [sys.executable, "-m", "server.cli", "serve", "--port", str(port), "--no-auth", "--weights", "tiny",
            "--weights-root", str(work / "weights"), "--pipelines", SLUG, "--device", device,
            "--keys-file", str(work / "keys.json"), "--job-store", str(work / "jobs.sqlite"),
            "--outputs-dir", str(work / "outputs"), "--log-level", "warning"]
    # One torch thread, as Ray gives each replica: oversubscribed intra-op threads on a shared CPU
    # measure the contention, not the server.
    process = subprocess.Popen(args, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        return measure(url, body, clients=2, seconds=seconds)
    finally:
        process.terminate()
        process.wait(30)


def on_ray(settings_values: dict, body: dict, seconds: float, gpu: bool) -> dict[str, dict]:
    import ray
    from ray import serve

    from server.scale.application import APP_NAME, build_application
    from server.settings import Settings

    ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    results = {}
    try:
        for replicas in (1, 2):
            settings = Settings(**settings_values, engine="ray", ray_min_replicas=replicas, ray_max_replicas=replicas,
                                ray_num_gpus=(1 / replicas if gpu else 0), ray_num_cpus=0.5)
            serve.run(build_application(settings), name=APP_NAME, route_prefix="/")
            results[f"ray_{replicas}_replica"] = measure(f"http://127.0.0.1:{port}", body, clients=2 * replicas,
                                                         seconds=seconds)
            print(f"ray, {replicas} replica(s): {results[f'ray_{replicas}_replica']}", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each throughput run")
    parser.add_argument("--gpu", action="store_true", help="run the pipeline on cuda:0 (Ray: a GPU share each)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    options = parser.parse_args(argv)

    from pipelines.weights.tiny import write_tiny_profile

    work = Path(tempfile.mkdtemp(prefix="bench_ray_"))
    write_tiny_profile(work / "weights" / "tiny", [SLUG])
    redis_process, redis_url = start_redis(work)
    values = dict(store=redis_url, no_auth=True, weights_root=work / "weights", weights="tiny", pipelines=[SLUG],
                  keys_file=work / "keys.json", job_store=work / "jobs.sqlite", outputs_dir=work / "outputs",
                  device=["cuda:0" if options.gpu else "cpu"], request_timeout_s=120, queue_max=64)
    body = request_body()
    try:
        results = {"embedded": embedded(work, body, options.seconds, values["device"][0])}
        print(f"embedded: {results['embedded']}", flush=True)
        results.update(on_ray(values, body, options.seconds, options.gpu))
    finally:
        redis_process.kill()
        shutil.rmtree(work, ignore_errors=True)
    results["ray_overhead_per_request_s"] = round(
        results["ray_1_replica"]["overhead_p50_s"] - results["embedded"]["overhead_p50_s"], 4)
    print(json.dumps(results, indent=2))
    if options.out:
        options.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
