"""The jobs waiting to run: one FIFO per endpoint, each bounded so that a burst is refused (429).

Per-endpoint queues are what keeps a short request from waiting behind another endpoint's long
one: each endpoint has its own workers (``server.engine``), so a queue only ever holds jobs of
one pipeline, served in arrival order.
"""
from __future__ import annotations

import collections
import threading

from server.errors import ApiError
from server.jobs import Job

# A full queue drains at the pace of its endpoint; a few seconds is a polite first retry.
FULL_QUEUE_RETRY_S = 5


class EndpointQueues:
    def __init__(self, slugs: list[str], max_depth: int):
        self.max_depth = max_depth
        self._jobs: dict[str, collections.deque[Job]] = {slug: collections.deque() for slug in slugs}
        self._ready = threading.Condition()

    def ensure_room(self, slug: str) -> None:
        waiting = len(self._jobs[slug])
        if waiting >= self.max_depth:
            raise ApiError(429, f"the server is busy: {waiting} {slug} requests are waiting; retry later",
                           {"Retry-After": str(FULL_QUEUE_RETRY_S)})

    def put(self, job: Job) -> None:
        with self._ready:
            self._jobs[job.slug].append(job)
            self._ready.notify_all()

    def take(self, slug: str, timeout: float, accept=lambda job: True) -> Job | None:
        """The oldest waiting job of ``slug`` that ``accept`` takes (others stay queued), or None
        after ``timeout`` seconds."""
        with self._ready:
            job = self._first(slug, accept)
            if job is None:
                self._ready.wait(timeout)
                job = self._first(slug, accept)
            if job is not None:
                self._jobs[slug].remove(job)
            return job

    def _first(self, slug: str, accept) -> Job | None:
        return next((job for job in self._jobs[slug] if accept(job)), None)

    def remove(self, job: Job) -> bool:
        with self._ready:
            try:
                self._jobs[job.slug].remove(job)
                return True
            except ValueError:
                return False

    def depth(self, slug: str | None = None) -> int:
        if slug is not None:
            return len(self._jobs[slug])
        return sum(len(jobs) for jobs in self._jobs.values())

    def waiting(self) -> list[Job]:
        with self._ready:
            return [job for queue in self._jobs.values() for job in queue]

    def drain(self) -> list[Job]:
        """Every waiting job, removed (at shutdown)."""
        with self._ready:
            jobs = [job for queue in self._jobs.values() for job in queue]
            for queue in self._jobs.values():
                queue.clear()
            return jobs
