"""Job execution: one FIFO queue shared by v1 and v2, one worker thread per device, and a
SQLite store that keeps v2 jobs (and their inputs on disk) across restarts.

A v2 job that was QUEUED when the server stopped is queued again in its original order; one that
was PROCESSING is run again until it has had ``job_max_attempts`` runs, then marked FAILED with
the reason. Nothing is silently lost (issue 2, "Execution").
"""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import shutil
import sqlite3
import threading
import time
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines import registry
from pipelines.base import Cancelled, LicenceRefused, LoadOptions, WeightsMissing
from server.auth import Gatekeeper
from server.errors import ApiError, is_out_of_memory, pipeline_failure
from server.media import decode_inputs, read_inputs, save_inputs
from server.metrics import Metrics
from server.outputs import OutputFile, OutputStore, encode_result
from server.protocol import ENDPOINTS
from server.settings import Settings

log = logging.getLogger("facefoundry")

QUEUED, PROCESSING, COMPLETED, FAILED = "QUEUED", "PROCESSING", "COMPLETED", "FAILED"


@dataclass
class Job:
    id: str
    slug: str
    params: Any  # the pipeline's Params
    seed: int
    fmt: str
    quality: int
    key_id: str | None
    cost: float
    created: float
    deadline: float
    persistent: bool  # v2: kept in the store and answerable by id
    inputs: dict[str, Any] | None = None  # decoded; None for a job recovered after a restart
    attempts: int = 0
    future: Future = field(default_factory=Future, repr=False)
    cancelled: bool = False

    @property
    def abandoned(self) -> bool:
        """A v1 client stopped waiting (deadline or disconnect): do not run or charge it."""
        return self.cancelled or self.future.cancelled()


@dataclass
class Outcome:
    files: list[OutputFile]
    seed: int
    queue_time: float
    inference_time: float
    total_time: float
    cost: float
    remaining_credits: float


class JobStore:
    """The v2 jobs in SQLite; one connection guarded by a lock (writes are small and rare)."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY, slug TEXT NOT NULL, key_id TEXT, status TEXT NOT NULL,
        params TEXT NOT NULL, seed INTEGER NOT NULL, fmt TEXT NOT NULL, quality INTEGER NOT NULL,
        cost REAL NOT NULL, created REAL NOT NULL, deadline REAL NOT NULL, expires REAL NOT NULL,
        started REAL, finished REAL, attempts INTEGER NOT NULL DEFAULT 0, error TEXT, result TEXT
    )"""

    def __init__(self, path: Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(self.SCHEMA)

    def _run(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def insert(self, job: Job, expires: float) -> None:
        self._run(
            "INSERT INTO jobs (id, slug, key_id, status, params, seed, fmt, quality, cost, created,"
            " deadline, expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (job.id, job.slug, job.key_id, QUEUED, json.dumps(dataclasses.asdict(job.params)), job.seed, job.fmt,
             job.quality, job.cost, job.created, job.deadline, expires),
        )

    def mark_processing(self, job_id: str, started: float) -> None:
        self._run("UPDATE jobs SET status=?, started=?, attempts=attempts+1 WHERE id=?",
                  (PROCESSING, started, job_id))

    def requeue(self, job_id: str) -> None:
        self._run("UPDATE jobs SET status=? WHERE id=?", (QUEUED, job_id))

    def complete(self, job_id: str, finished: float, result: dict) -> None:
        self._run("UPDATE jobs SET status=?, finished=?, result=? WHERE id=?",
                  (COMPLETED, finished, json.dumps(result), job_id))

    def fail(self, job_id: str, finished: float, error: str) -> None:
        self._run("UPDATE jobs SET status=?, finished=?, error=? WHERE id=?",
                  (FAILED, finished, error, job_id))

    def get(self, job_id: str) -> dict | None:
        rows = self._run("SELECT * FROM jobs WHERE id=?", (job_id,))
        return dict(rows[0]) if rows else None

    def unfinished(self) -> list[dict]:
        rows = self._run("SELECT * FROM jobs WHERE status IN (?, ?) ORDER BY created", (QUEUED, PROCESSING))
        return [dict(row) for row in rows]

    def expire(self, now: float) -> list[str]:
        with self._lock:
            ids = [r[0] for r in self._db.execute("SELECT id FROM jobs WHERE expires < ?", (now,))]
            self._db.execute("DELETE FROM jobs WHERE expires < ?", (now,))
        return ids

    def close(self) -> None:
        with self._lock:
            self._db.close()


class JobQueue:
    """FIFO of jobs waiting for a worker, bounded so that a burst is refused (429), not buffered."""

    def __init__(self, max_depth: int):
        self.max_depth = max_depth
        self._jobs: collections.deque[Job] = collections.deque()
        self._ready = threading.Condition()

    def ensure_room(self) -> None:
        if len(self._jobs) >= self.max_depth:
            raise ApiError(429, f"the server is busy: {len(self._jobs)} requests are waiting; retry later")

    def put(self, job: Job) -> None:
        with self._ready:
            self._jobs.append(job)
            self._ready.notify()

    def get(self, timeout: float) -> Job | None:
        with self._ready:
            if not self._jobs:
                self._ready.wait(timeout)
            return self._jobs.popleft() if self._jobs else None

    def remove(self, job: Job) -> bool:
        with self._ready:
            try:
                self._jobs.remove(job)
                return True
            except ValueError:
                return False

    def __len__(self) -> int:
        return len(self._jobs)


class PipelinePool:
    """The pipelines loaded on one device, loaded on first use; their state feeds /ready."""

    def __init__(self, settings: Settings, device: str):
        self.settings = settings
        self.device = device
        self._loaded: dict[str, Any] = {}
        self._state: dict[str, tuple[str, str | None]] = {}
        self._lock = threading.Lock()

    def state(self, slug: str) -> tuple[str, str | None]:
        """(state, detail): loaded | loading | not loaded | missing weights | licence refused |
        unavailable | failed."""
        return self._state.get(slug, ("not loaded", None))

    def components(self, slug: str) -> list[dict]:
        pipeline = self._loaded.get(slug)
        return pipeline.components() if pipeline is not None else []

    def get(self, slug: str):
        with self._lock:
            if slug in self._loaded:
                return self._loaded[slug]
            self._state[slug] = ("loading", None)
            try:
                cls = registry.pipeline_class(slug)
            except (ImportError, AttributeError) as exc:
                self._state[slug] = ("unavailable", str(exc))
                raise ApiError(503, f"the {slug} pipeline is not available in this installation ({exc})") from None
            options = LoadOptions(weights_dir=self.settings.weights_dir, device=self.device,
                                  dtype=self.settings.dtype, max_audio_seconds=self.settings.max_audio_seconds,
                                  allow_noncommercial=self.settings.allow_noncommercial)
            try:
                pipeline = cls.load(options)
            except WeightsMissing as exc:
                self._state[slug] = ("missing weights", str(exc))
                raise ApiError(503, str(exc)) from None
            except LicenceRefused as exc:
                self._state[slug] = ("licence refused", str(exc))
                raise ApiError(503, f"{slug} needs a non-commercial component: {exc}") from None
            except Exception as exc:
                self._state[slug] = ("failed", f"{type(exc).__name__}: {exc}")
                log.error("loading %s failed", slug, exc_info=exc)
                raise ApiError(503, f"{slug} could not be loaded: {type(exc).__name__}") from None
            self._loaded[slug] = pipeline
            self._state[slug] = ("loaded", None)
            return pipeline

    def free_memory(self, slug: str) -> None:
        """After a CUDA OOM: let the pipeline drop its caches so the next request can run."""
        hook = getattr(self._loaded.get(slug), "free_memory", None)
        if callable(hook):
            try:
                hook()
            except Exception as exc:
                log.warning("free_memory of %s failed: %s", slug, exc)


class Engine:
    """Owns the queue, the store, the workers and the pipeline pools."""

    def __init__(self, settings: Settings, gatekeeper: Gatekeeper, metrics: Metrics):
        self.settings = settings
        self.gatekeeper = gatekeeper
        self.metrics = metrics
        self.queue = JobQueue(settings.queue_max)
        self.store = JobStore(settings.job_store)
        self.outputs = OutputStore(settings.outputs_dir, settings.job_ttl_s)
        self.pools = [PipelinePool(settings, device) for device in settings.device]
        self._stopping = threading.Event()
        self._workers: list[threading.Thread] = []
        metrics.queue_depth.set_function(lambda: len(self.queue))

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self.recover()
        for pool in self.pools:
            worker = threading.Thread(target=self._work, args=(pool,), name=f"worker-{pool.device}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking jobs; a job still running stays PROCESSING and is recovered at next start."""
        self._stopping.set()
        for worker in self._workers:
            worker.join(timeout)
        self.store.close()

    def preload(self) -> None:
        for pool in self.pools:
            for slug in self.settings.pipelines:
                try:
                    pool.get(slug)
                except ApiError as exc:
                    log.warning("preloading %s on %s: %s", slug, pool.device, exc.message)

    def recover(self) -> None:
        for row in self.store.unfinished():
            if row["status"] == PROCESSING and row["attempts"] >= self.settings.job_max_attempts:
                self.store.fail(row["id"], time.time(),
                                f"the server stopped while this job was running (attempt {row['attempts']} of "
                                f"{self.settings.job_max_attempts}); submit it again")
                continue
            self.store.requeue(row["id"])
            params = registry.params_class(row["slug"])(**json.loads(row["params"]))
            job = Job(id=row["id"], slug=row["slug"], params=params, seed=row["seed"],
                      fmt=row["fmt"], quality=row["quality"], key_id=row["key_id"], cost=row["cost"],
                      created=row["created"], deadline=row["deadline"], persistent=True,
                      attempts=row["attempts"])
            self.queue.put(job)
            log.info("re-queued v2 job %s (%s) after a restart", job.id, row["status"])

    def sweep(self, now: float | None = None) -> None:
        """Forget expired v2 jobs and delete their files."""
        now = time.time() if now is None else now
        for job_id in self.store.expire(now):
            shutil.rmtree(self.settings.inputs_dir / job_id, ignore_errors=True)
        self.outputs.sweep(now)

    # -- submission -------------------------------------------------------------------------

    def submit(self, job: Job, raw_inputs: dict[str, bytes]) -> None:
        """Queue a job (429 when the queue is full); a v2 job is stored first so it survives a restart."""
        self.queue.ensure_room()
        if job.persistent:
            save_inputs(raw_inputs, self.settings.inputs_dir / job.id)
            self.store.insert(job, expires=job.created + self.settings.job_ttl_s)
        self.queue.put(job)

    def cancel(self, job: Job) -> None:
        """A v1 client stopped waiting: drop the job if it has not started, never charge it."""
        job.cancelled = True
        self.queue.remove(job)

    def lookup(self, job_id: str) -> dict | None:
        row = self.store.get(job_id)
        if row is None or row["expires"] < time.time():
            return None
        return row

    # -- running ----------------------------------------------------------------------------

    def _work(self, pool: PipelinePool) -> None:
        while not self._stopping.is_set():
            job = self.queue.get(timeout=0.2)
            if job is not None and not job.abandoned:
                self.run(pool, job)

    def run(self, pool: PipelinePool, job: Job) -> None:
        started = time.time()
        if started > job.deadline:
            self._fail(job, ApiError(504, "the request timed out while waiting in the queue"))
            return
        if job.persistent:
            self.store.mark_processing(job.id, started)
        endpoint = ENDPOINTS[job.slug]
        try:
            pipeline = pool.get(job.slug)
            inputs = job.inputs
            if inputs is None:
                inputs = decode_inputs(endpoint, read_inputs(self.settings.inputs_dir / job.id), self.settings)
            result = pipeline(job.params, inputs, job.seed, progress=lambda done, total: self._check(job))
            files = encode_result(result, job.fmt, job.quality)
        except Cancelled:
            return
        except Exception as exc:
            if is_out_of_memory(exc):
                pool.free_memory(job.slug)
            self._fail(job, pipeline_failure(job.slug, exc))
            return
        finished = time.time()
        self.metrics.inference.labels(job.slug).observe(finished - started)
        if job.abandoned:
            return
        remaining = self.gatekeeper.charge(job.key_id, job.cost)
        outcome = Outcome(files=files, seed=job.seed, queue_time=started - job.created,
                          inference_time=finished - started, total_time=finished - job.created,
                          cost=job.cost, remaining_credits=remaining)
        if job.persistent:
            self.store.complete(job.id, finished, self._stored_result(job, endpoint.output, outcome))
            shutil.rmtree(self.settings.inputs_dir / job.id, ignore_errors=True)
        try:
            job.future.set_result(outcome)
        except InvalidStateError:  # the v1 client gave up a moment ago
            pass

    @staticmethod
    def _check(job: Job) -> None:
        """The pipelines' progress callback: stop an abandoned job at the next stage boundary."""
        if job.abandoned:
            raise Cancelled(job.id)

    def _stored_result(self, job: Job, kind: str, outcome: Outcome) -> dict:
        files = []
        for index, output in enumerate(outcome.files):
            suffix = "" if index == 0 else f"-{index}"
            entry = {"file_name": f"{job.id}{suffix}.{output.ext}", "content_type": output.mime,
                     "file_size": len(output.data)}
            if self.settings.store_outputs:
                entry["name"] = self.outputs.save(output)
            else:
                entry["data_uri"] = output.data_uri()
            files.append(entry)
        metrics = {"inference_time": round(outcome.inference_time, 3), "queue_time": round(outcome.queue_time, 3),
                   "total_time": round(outcome.total_time, 3), "cost": outcome.cost,
                   "remaining_credits": outcome.remaining_credits}
        if job.attempts >= 1:
            metrics["retry_count"] = job.attempts
        return {"kind": kind, "files": files, "seed": outcome.seed, "metrics": metrics}

    def _fail(self, job: Job, error: ApiError) -> None:
        if job.persistent:
            self.store.fail(job.id, time.time(), error.message)
            shutil.rmtree(self.settings.inputs_dir / job.id, ignore_errors=True)
        if not job.future.done():
            job.future.set_exception(error)

    # -- state for the routes ---------------------------------------------------------------

    def ensure_loaded(self, slug: str) -> None:
        """Load ``slug`` on the first device now, so that a missing pipeline is a 503 at once."""
        self.pools[0].get(slug)

    def readiness(self) -> dict:
        pipelines = {}
        for slug in self.settings.pipelines:
            states = {pool.device: pool.state(slug) for pool in self.pools}
            state, detail = states[self.pools[0].device]
            pipelines[slug] = {
                "state": state,
                "detail": detail,
                "devices": {device: s for device, (s, _) in states.items()},
                "components": self.pools[0].components(slug),
            }
        loading = any(p["state"] == "loading" or "loading" in p["devices"].values() for p in pipelines.values())
        return {"ready": not loading, "weights_profile": self.settings.weights,
                "weights_dir": str(self.settings.weights_dir), "queue_depth": len(self.queue),
                "pipelines": pipelines}
