"""Running jobs: workers per endpoint and device, credits settled once, cancellation, shutdown.

Fairness (issue 12, "Money and fairness"): every endpoint has its own queue and, on every device,
its own worker thread, so endpoints run side by side and no request waits behind another
endpoint's long job; within an endpoint jobs run one at a time, in arrival order. Chosen over a
fair scheduler on one worker per device because a fair scheduler only reorders the waiting jobs:
the 0.8 s expression edit would still wait for the running 180 s video. Running endpoints side
by side costs no extra weights (each pipeline is loaded once per device either way), only their
activations; a pipeline instance never runs two jobs at once (they keep per-request caches).

Money: a job's cost is reserved from the key's balance when it is accepted (an atomic debit under
the keys file lock, so no concurrency overdraws a key), kept when the job succeeds and refunded
otherwise: failure, a client that gave up, a cancel, a shutdown.

Cancellation: a v1 request whose client disconnected or whose deadline passed, or a v2 job
cancelled by ``POST /v2/requests/{id}/cancel``, is dropped if still queued, and otherwise stopped
by the pipeline's ``progress`` callback at its next stage boundary (``pipelines.base.Cancelled``).

Shutdown (SIGTERM): ``drain`` refuses new jobs and leaves queued v2 jobs for the next start, while
the workers finish the running jobs and the queued v1 requests whose clients are waiting; ``stop``
waits for them up to ``shutdown_grace_s`` and puts a v2 job still running back in the queue.
"""
from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from concurrent.futures import InvalidStateError

from pipelines import registry
from pipelines.base import Cancelled
from server.auth import Gatekeeper
from server.errors import OUT_OF_MEMORY, ApiError, is_out_of_memory, pipeline_failure
from server.jobs import CANCELLED_MESSAGE, COMPLETED, FAILED, PROCESSING, Job, Outcome
from server.logs import REQUEST_ID
from server.media import decode_inputs, read_inputs, save_inputs
from server.metrics import Metrics
from server.outputs import OutputStore, encode_result
from server.pool import IDLE_UNLOADED, LOADED, LOADING, NOT_LOADED, ModelPool
from server.protocol import ENDPOINTS
from server.queue import EndpointQueues
from server.results import job_body
from server.settings import Settings
from server.store import JobStore, SqliteJobStore
from server.webhooks import WebhookSender

log = logging.getLogger("facefoundry.engine")

# States in which an endpoint can take requests (a lazy or idle-unloaded one loads on demand).
SERVING_STATES = (LOADED, NOT_LOADED, IDLE_UNLOADED)
NOT_BUILT = "not built"
SHUTTING_DOWN_RETRY_S = 10


def not_built_message(slug: str) -> str:
    return f"{slug} is not available in this version of facefoundry"


def failure_reason(error: ApiError) -> str:
    """The ``reason`` label of a failed job in the metrics."""
    if error.status == 503:
        return "out_of_memory" if error.message == OUT_OF_MEMORY else "unavailable"
    return {400: "input", 504: "timeout"}.get(error.status, "pipeline")


class Engine:
    def __init__(self, settings: Settings, gatekeeper: Gatekeeper, metrics: Metrics, store: JobStore | None = None):
        self.settings = settings
        self.gatekeeper = gatekeeper
        self.metrics = metrics
        self.slugs = [slug for slug in settings.pipelines if registry.is_built(slug)]
        self.queues = EndpointQueues(self.slugs, settings.queue_max)
        self.store = store if store is not None else SqliteJobStore(settings.job_store)
        self.outputs = OutputStore(settings.outputs_dir, settings.job_ttl_s)
        self.pools = [ModelPool(settings, device, metrics) for device in settings.device]
        self.webhooks = WebhookSender(settings, metrics)
        self._lock = threading.Lock()
        self._active: dict[str, Job] = {}  # v2 jobs queued or running, by id (for cancel)
        self._running: set[Job] = set()
        self._draining = threading.Event()
        self._drain_started: float | None = None
        self._stopping = threading.Event()
        self._workers: list[threading.Thread] = []
        for slug in self.slugs:
            metrics.queue_depth.labels(slug).set_function(lambda slug=slug: self.queues.depth(slug))

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self.recover()
        self.webhooks.start()
        for pool in self.pools:
            for slug in self.slugs:
                worker = threading.Thread(target=self._work, args=(pool, slug), name=f"worker-{slug}-{pool.device}",
                                          daemon=True)
                worker.start()
                self._workers.append(worker)
        if not self.settings.lazy:
            self.preload()

    def preload(self) -> None:
        """Start loading every endpoint on every device; each load runs in its own thread."""
        for pool in self.pools:
            for slug in self.slugs:
                pool.request(slug)

    def drain(self) -> None:
        """SIGTERM: take no new jobs; queued v2 jobs wait for the next start."""
        if not self._draining.is_set():
            self._drain_started = time.time()
            self._draining.set()
            log.info("shutting down: finishing %d running jobs (grace %g s)", len(self._running),
                     self.settings.shutdown_grace_s)

    def stop(self) -> None:
        self.drain()
        deadline = (self._drain_started or time.time()) + self.settings.shutdown_grace_s
        while time.time() < deadline and (self._running or self._waiting_v1()):
            time.sleep(0.05)
        self._stopping.set()
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.time()) + 0.5)
        for job in self.queues.drain():
            if not job.persistent:
                self._fail(job, ApiError(503, "the server is shutting down; retry shortly",
                                         {"Retry-After": str(SHUTTING_DOWN_RETRY_S)}), "shutdown")
        with self._lock:
            unfinished = [job for job in self._running if job.persistent]
        for job in unfinished:
            self.store.requeue(job.id)
            log.warning("v2 job %s was still running at shutdown; it runs again at the next start", job.id)
        self.webhooks.stop(max(0.0, deadline - time.time()))
        self.store.close()

    def _waiting_v1(self) -> bool:
        return any(not job.persistent for job in self.queues.waiting())

    def recover(self) -> None:
        for row in self.store.unfinished():
            if row["slug"] not in self.slugs:
                self.store.fail(row["id"], time.time(), f"{row['slug']} is not enabled on this server any more")
                self._refund(row["key_id"], row["cost"])
                continue
            if row["status"] == PROCESSING and row["attempts"] >= self.settings.job_max_attempts:
                self.store.fail(row["id"], time.time(),
                                f"the server stopped while this job was running (attempt {row['attempts']} of "
                                f"{self.settings.job_max_attempts}); submit it again")
                self._refund(row["key_id"], row["cost"])
                continue
            self.store.requeue(row["id"])
            job = job_from_row(row)
            with self._lock:
                self._active[job.id] = job
            self.queues.put(job)
            log.info("re-queued v2 job %s (%s) after a restart", job.id, row["status"])

    def sweep(self, now: float | None = None) -> None:
        """Forget expired v2 jobs and delete their files; unload endpoints idle too long."""
        now = time.time() if now is None else now
        for job_id in self.store.expire(now):
            shutil.rmtree(self.settings.inputs_dir / job_id, ignore_errors=True)
        self.outputs.sweep(now)
        if self.settings.idle_unload_s is not None:
            for pool in self.pools:
                pool.unload_idle(now, self.settings.idle_unload_s)

    # -- submission -------------------------------------------------------------------------

    def check_accepting(self, slug: str) -> None:
        """Refuse before any work when the server is shutting down or the queue is full."""
        if self._draining.is_set():
            raise ApiError(503, "the server is shutting down; retry shortly",
                           {"Retry-After": str(SHUTTING_DOWN_RETRY_S)})
        self.queues.ensure_room(slug)

    def loaded(self, slug: str):
        """A future resolved when ``slug`` is loaded on the first device (ApiError 503 with the
        remembered reason when it cannot be); a lazy endpoint starts loading here."""
        return self.pools[0].request(slug)

    def submit(self, job: Job, raw_inputs: dict[str, bytes]) -> None:
        """Queue a job whose cost is already reserved; a v2 job is stored first so it survives a restart."""
        self.check_accepting(job.slug)
        if job.persistent:
            save_inputs(raw_inputs, self.settings.inputs_dir / job.id)
            self.store.insert(job, expires=job.created + self.settings.job_ttl_s)
            with self._lock:
                self._active[job.id] = job
        self.queues.put(job)

    def abandon(self, job: Job) -> None:
        """A v1 client stopped waiting (disconnect or deadline): drop the job if it has not
        started, else stop it at its next stage boundary; never charge it."""
        job.cancel_requested.set()
        if self.queues.remove(job):
            self._cancelled(job)

    def cancel(self, job_id: str) -> str:
        """``POST /v2/requests/{id}/cancel``: the job's status afterwards (FAILED with the
        cancellation when it had not started; PROCESSING while it runs to its next boundary)."""
        with self._lock:
            job = self._active.get(job_id)
        if job is None:
            raise ApiError(409, f"request {job_id} has already finished")
        job.cancel_requested.set()
        if self.queues.remove(job):
            self._cancelled(job)
            return FAILED
        return PROCESSING

    def lookup(self, job_id: str) -> dict | None:
        """The stored row, with the running job's last ``progress`` (done, total) when it has one."""
        row = self.store.get(job_id)
        if row is None or row["expires"] < time.time():
            return None
        with self._lock:
            job = self._active.get(job_id)
        if job is not None and job.progress is not None and row["status"] == PROCESSING:
            row = {**row, "progress": job.progress}
        return row

    # -- running ----------------------------------------------------------------------------

    def _may_start(self, job: Job) -> bool:
        # While draining, only v1 jobs run: their clients are waiting for the answer.
        return not (self._draining.is_set() and job.persistent)

    def _work(self, pool: ModelPool, slug: str) -> None:
        while not self._stopping.is_set():
            job = self.queues.take(slug, 0.2, self._may_start)
            if job is None:
                continue
            with self._lock:
                self._running.add(job)
            try:
                self.run(pool, job)
            finally:
                with self._lock:
                    self._running.discard(job)

    def run(self, pool: ModelPool, job: Job) -> None:
        token = REQUEST_ID.set(job.request_id or job.id)
        try:
            self._run(pool, job)
        finally:
            REQUEST_ID.reset(token)

    def _run(self, pool: ModelPool, job: Job) -> None:
        started = time.time()
        if job.cancelled:
            self._cancelled(job)
            return
        if started > job.deadline:
            self._fail(job, ApiError(504, "the request timed out while waiting in the queue"))
            return
        self.metrics.queue_wait.labels(job.slug).observe(started - job.created)
        if job.persistent:
            self.store.mark_processing(job.id, started)
        try:
            pipeline = pool.acquire(job.slug)
            try:
                inputs = job.inputs
                if inputs is None:
                    raw = read_inputs(self.settings.inputs_dir / job.id)
                    inputs = decode_inputs(ENDPOINTS[job.slug], raw, self.settings)
                result = pipeline(job.params, inputs, job.seed, progress=lambda done, total: track_progress(job, done, total))
            finally:
                pool.release(job.slug)
            files = encode_result(result, job.fmt, job.quality)
        except Cancelled:
            self._cancelled(job)
            return
        except Exception as exc:
            if is_out_of_memory(exc):
                pool.free_memory(job.slug)
            self._fail(job, pipeline_failure(job.slug, exc))
            return
        finished = time.time()
        self.metrics.inference.labels(job.slug).observe(finished - started)
        if job.cancelled:  # the client gave up after the last stage boundary: not charged
            self._cancelled(job)
            return
        job.settled = True  # the reservation is kept: the call succeeded
        outcome = Outcome(files=files, seed=job.seed, queue_time=started - job.created,
                          inference_time=finished - started, total_time=finished - job.created,
                          cost=job.cost, remaining_credits=self.gatekeeper.balance(job.key_id))
        if job.persistent:
            self.store.complete(job.id, finished, self._stored_result(job, ENDPOINTS[job.slug].output, outcome))
            self._forget(job)
        try:
            job.future.set_result(outcome)
        except InvalidStateError:  # the v1 client gave up a moment ago
            pass

    def _stored_result(self, job: Job, kind: str, outcome: Outcome) -> dict:
        return stored_result(job, kind, outcome, self.outputs if self.settings.store_outputs else None)

    # -- endings ----------------------------------------------------------------------------

    def _refund(self, key_id: str | None, cost: float) -> None:
        self.gatekeeper.refund(key_id, cost)

    def _release_reservation(self, job: Job) -> None:
        if not job.settled:
            job.settled = True
            self._refund(job.key_id, job.cost)

    def _cancelled(self, job: Job) -> None:
        self._release_reservation(job)
        self.metrics.failures.labels(job.slug, "cancelled").inc()
        log.info("job %s (%s) cancelled; not charged", job.id, job.slug)
        error = ApiError(409, CANCELLED_MESSAGE)
        if job.persistent:
            self.store.fail(job.id, time.time(), CANCELLED_MESSAGE)
            self._forget(job)
        set_exception(job, error)

    def _fail(self, job: Job, error: ApiError, reason: str | None = None) -> None:
        self._release_reservation(job)
        self.metrics.failures.labels(job.slug, reason or failure_reason(error)).inc()
        if job.persistent:
            self.store.fail(job.id, time.time(), error.message)
            self._forget(job)
        set_exception(job, error)

    def _forget(self, job: Job) -> None:
        """A v2 job reached COMPLETED or FAILED: drop its inputs, call its webhook."""
        with self._lock:
            self._active.pop(job.id, None)
        shutil.rmtree(self.settings.inputs_dir / job.id, ignore_errors=True)
        if job.webhook:
            row = self.store.get(job.id)
            if row is not None:
                _, body, _ = job_body(row, job.public_base, full=True)
                event = "completed" if row["status"] == COMPLETED else "failed"
                self.webhooks.send(job.webhook, body, event, job.request_id or job.id)

    # -- state for the routes ---------------------------------------------------------------

    def readiness(self) -> dict:
        """Per endpoint: state, reason, device/dtype/providers per device, components; ready only
        when every built, enabled endpoint can serve (issue 9: 503 with the reasons otherwise)."""
        pipelines, reasons = {}, {}
        for slug in self.settings.pipelines:
            if not registry.is_built(slug):
                pipelines[slug] = {"state": NOT_BUILT, "detail": not_built_message(slug)}
                continue
            states = {pool.device: pool.state(slug) for pool in self.pools}
            state, detail = states[self.pools[0].device]
            pipelines[slug] = {
                "state": state,
                "detail": detail,
                "devices": {device: s for device, (s, _) in states.items()},
                "runtime": [r for r in (pool.runtime(slug) for pool in self.pools) if r is not None],
                "components": self.pools[0].components(slug),
            }
            blocked = {device: (s, d) for device, (s, d) in states.items() if s not in SERVING_STATES}
            if blocked:
                reasons[slug] = "; ".join(f"{device}: {d or s}" for device, (s, d) in blocked.items())
        if self._draining.is_set():
            reasons["server"] = "shutting down"
        loading = [slug for slug, reason in reasons.items() if pipelines.get(slug, {}).get("state") == LOADING]
        return {"ready": not reasons, "reasons": reasons, "loading": loading,
                "weights_profile": self.settings.weights, "weights_dir": str(self.settings.weights_dir),
                "queue_depth": self.queues.depth(), "pipelines": pipelines}


def track_progress(job: Job, done: int, total: int) -> None:
    """The pipelines' progress callback: remember (done, total) for the v2 status (issue 11: images
    done of all asked for) and stop a cancelled job at the stage boundary it reached."""
    job.progress = (done, total)
    if job.cancelled:
        raise Cancelled(job.id)


def stored_result(job: Job, kind: str, outcome: Outcome, outputs: OutputStore | None) -> dict:
    """A finished v2 job's stored result: its files saved in ``outputs`` (data URIs without),
    names, sizes and metrics; shared with the Ray runners (server.scale.runner)."""
    files = []
    for index, output in enumerate(outcome.files):
        suffix = "" if index == 0 else f"-{index}"
        entry = {"file_name": f"{job.id}{suffix}.{output.ext}", "content_type": output.mime,
                 "file_size": len(output.data)}
        if outputs is not None:
            entry["name"] = outputs.save(output)
        else:
            entry["data_uri"] = output.data_uri()
        files.append(entry)
    metrics = {"inference_time": round(outcome.inference_time, 3), "queue_time": round(outcome.queue_time, 3),
               "total_time": round(outcome.total_time, 3), "cost": outcome.cost,
               "remaining_credits": outcome.remaining_credits}
    if job.attempts >= 1:
        metrics["retry_count"] = job.attempts
    return {"kind": kind, "files": files, "seed": outcome.seed, "metrics": metrics}


def set_exception(job: Job, error: ApiError) -> None:
    try:
        job.future.set_exception(error)
    except InvalidStateError:  # already cancelled by its v1 client, or answered
        pass


def job_from_row(row: dict) -> Job:
    """A stored v2 job, queued again after a restart (its inputs are read back from disk)."""
    webhook = json.loads(row["webhook"]) if row.get("webhook") else {}
    return Job(id=row["id"], slug=row["slug"], params=registry.params_class(row["slug"])(**json.loads(row["params"])),
               seed=row["seed"], fmt=row["fmt"], quality=row["quality"], key_id=row["key_id"], cost=row["cost"],
               created=row["created"], deadline=row["deadline"], persistent=True, request_id=row.get("request_id") or "",
               webhook=webhook.get("url"), public_base=webhook.get("base", ""), attempts=row["attempts"])
