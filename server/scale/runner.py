"""One endpoint's pipeline on one Ray Serve replica: the scale-out mode's counterpart of the
embedded engine's worker thread (issue 14).

Each endpoint is its own deployment of this class, so Serve places, replicates and autoscales
them independently (``num_gpus`` per replica, fractional allowed). A replica loads its pipeline
through the same ``ModelPool`` as the embedded server (failures remembered with their reason and
retried with backoff) and runs one job at a time: a pipeline instance keeps per-request caches.

v1 calls arrive with their decoded inputs and return the encoded files. v2 calls carry only the
job's id and the dispatch token: the job, its inputs and its attempt count are in Redis
(``server.redis_store``); the replica claims it, renews its lease while it runs, and records the
outcome itself, so the result is safe as soon as the pipeline finishes, whoever dispatched it.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from pipelines.base import Cancelled
from server.auth import Gatekeeper
from server.backends import open_backend
from server.engine import job_from_row, stored_result
from server.errors import ApiError, is_out_of_memory, pipeline_failure
from server.jobs import CANCELLED_MESSAGE, COMPLETED, FAILED, PROCESSING, Job, Outcome
from server.media import decode_inputs
from server.metrics import Metrics
from server.outputs import OutputFile, OutputStore, encode_result
from server.pool import ModelPool
from server.protocol import ENDPOINTS
from server.settings import Settings

log = logging.getLogger("facefoundry.scale")

# A lease is renewed three times over its length, so one late renewal never hands a running job
# to another replica.
RENEWALS_PER_LEASE = 3
NOT_CLAIMED = "not claimed"
# Each replica reports its pipeline's state to Redis this often (the ingress's /ready reads it
# there, so a busy runner is never asked); a report older than REPORT_STALE_S is a dead runner's.
REPORT_EVERY_S = 2.0
REPORT_STALE_S = 10.0


@dataclass(frozen=True)
class Reply:
    """What a v1 call returns across Ray: the files, or the refusal."""

    files: list[OutputFile] | None = None
    started: float = 0.0
    finished: float = 0.0
    status: int = 0
    message: str = ""
    headers: dict[str, str] | None = None

    def error(self) -> ApiError:
        return ApiError(self.status, self.message, self.headers)


def replica_device(settings: Settings) -> str:
    """The GPU Ray assigned (it sets CUDA_VISIBLE_DEVICES, so it is always cuda:0 inside the
    replica, a fractional share included), else the configured device."""
    import ray

    return "cuda:0" if ray.get_gpu_ids() else settings.device[0]


def replica_name() -> str:
    """The replica's actor name (``SERVE_REPLICA::<app>#<deployment>#<id>``), stored with the
    job it runs: operators (and the tests) find the process running a job by it."""
    from ray import serve

    return serve.get_replica_context().replica_id.to_full_id_str()


class EndpointRunner:
    def __init__(self, slug: str, settings_values: dict[str, Any]):
        self.slug = slug
        self.settings = Settings(**settings_values)
        backend = open_backend(self.settings)
        self.jobs = backend.jobs
        self.gatekeeper = Gatekeeper(self.settings, backend.keys, backend.limiter)
        self.outputs = OutputStore(self.settings.outputs_dir, self.settings.job_ttl_s)
        self.pool = ModelPool(self.settings, replica_device(self.settings), Metrics())
        self.name = replica_name()
        self._one_at_a_time = threading.Lock()
        self._stopped = threading.Event()
        threading.Thread(target=self._report_state, name=f"report-{slug}", daemon=True).start()
        if not self.settings.lazy:
            # Serve routes to a replica once its constructor returns: loaded, or its load failed
            # (then every call answers the remembered 503 and retries the load with backoff).
            self.pool.request(slug).exception()

    def __del__(self):
        """Serve's replica shutdown: stop reporting, and say so at once."""
        self._stopped.set()
        self.jobs.forget_runner(self.slug, self.name)

    def _report_state(self) -> None:
        while True:
            state, detail = self.pool.state(self.slug)
            try:
                self.jobs.report_runner(self.slug, self.name, {
                    "at": time.time(), "state": state, "detail": detail, "runtime": self.pool.runtime(self.slug),
                    "components": self.pool.components(self.slug)})
            except Exception as exc:  # Redis briefly unreachable: the next report retries
                log.warning("reporting %s's state failed: %s", self.slug, exc)
            if self._stopped.wait(REPORT_EVERY_S):
                return

    async def run_inline(self, params: Any, inputs: dict[str, Any], seed: int, fmt: str, quality: int,
                         deadline: float) -> Reply:
        """A v1 call. Cancelling the call (the client left) stops the pipeline at its next stage."""
        cancelled = threading.Event()
        try:
            return await asyncio.to_thread(self._run_inline, params, inputs, seed, fmt, quality, deadline, cancelled)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def run_stored(self, job_id: str, token: str) -> str:
        """A v2 job held under ``token``: its final status, or ``not claimed`` when it was not
        there to run (finished, cancelled, or taken over by another dispatcher)."""
        return await asyncio.to_thread(self._run_stored, job_id, token)

    # -- in the replica's worker thread -------------------------------------------------------

    def _run_inline(self, params, inputs, seed, fmt, quality, deadline, cancelled: threading.Event) -> Reply:
        with self._one_at_a_time:
            started = time.time()
            if started > deadline:
                return Reply(status=504, message="the request timed out while waiting in the queue")

            def stop() -> None:
                if cancelled.is_set():
                    raise Cancelled("v1")

            try:
                files = self._execute(params, inputs, seed, fmt, quality, stop)
            except Cancelled:
                return Reply(status=409, message=CANCELLED_MESSAGE)
            except Exception as exc:
                error = self._failure(exc)
                return Reply(status=error.status, message=error.message, headers=error.headers)
            return Reply(files=files, started=started, finished=time.time())

    def _run_stored(self, job_id: str, token: str) -> str:
        with self._one_at_a_time:
            started = time.time()
            attempt = self.jobs.claim(job_id, token, started, self.name, started + self.settings.job_lease_s)
            if attempt is None:
                return NOT_CLAIMED
            job = job_from_row(self.jobs.get(job_id))
            job.attempts = attempt - 1  # earlier runs: the result's retry_count
            stop_renewing = threading.Event()
            threading.Thread(target=self._keep_lease, args=(job_id, token, stop_renewing),
                             name=f"lease-{job_id}", daemon=True).start()
            try:
                return self._finish_stored(job, token, started)
            finally:
                stop_renewing.set()

    def _finish_stored(self, job: Job, token: str, started: float) -> str:
        if started > job.deadline:
            return self._fail_stored(job, token, ApiError(504, "the request timed out while waiting in the queue"))
        try:
            inputs = decode_inputs(ENDPOINTS[job.slug], self.jobs.read_inputs(job.id), self.settings)
            files = self._execute(job.params, inputs, job.seed, job.fmt, job.quality,
                                  lambda: self._stop_if_cancelled(job))
        except Cancelled:
            return self._fail_stored(job, token, ApiError(409, CANCELLED_MESSAGE))
        except Exception as exc:
            return self._fail_stored(job, token, self._failure(exc))
        finished = time.time()
        outcome = Outcome(files=files, seed=job.seed, queue_time=started - job.created,
                          inference_time=finished - started, total_time=finished - job.created, cost=job.cost,
                          remaining_credits=self.gatekeeper.balance(job.key_id))
        outputs = self.outputs if self.settings.store_outputs else None
        if not self.jobs.complete(job.id, finished, stored_result(job, ENDPOINTS[job.slug].output, outcome, outputs),
                                  token=token):
            return NOT_CLAIMED  # cancelled or taken over meanwhile: that side settled it
        self.jobs.drop_inputs(job.id)
        return COMPLETED

    def _fail_stored(self, job: Job, token: str, error: ApiError) -> str:
        if not self.jobs.fail(job.id, time.time(), error.message, token=token):
            return NOT_CLAIMED  # cancelled or taken over meanwhile: that side settled it
        self.gatekeeper.refund(job.key_id, job.cost)
        self.jobs.drop_inputs(job.id)
        return FAILED

    def _execute(self, params, inputs, seed: int, fmt: str, quality: int, stop) -> list[OutputFile]:
        pipeline = self.pool.acquire(self.slug)
        try:
            result = pipeline(params, inputs, seed, progress=lambda done, total: stop())
        finally:
            self.pool.release(self.slug)
        return encode_result(result, fmt, quality)

    def _failure(self, exc: Exception) -> ApiError:
        if is_out_of_memory(exc):
            self.pool.free_memory(self.slug)
        return pipeline_failure(self.slug, exc)

    def _stop_if_cancelled(self, job: Job) -> None:
        if self.jobs.cancel_requested(job.id):
            raise Cancelled(job.id)

    def _keep_lease(self, job_id: str, token: str, stop: threading.Event) -> None:
        lease = self.settings.job_lease_s
        while not stop.wait(lease / RENEWALS_PER_LEASE):
            if not self.jobs.renew(job_id, token, PROCESSING, time.time() + lease):
                return
