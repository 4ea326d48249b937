"""What the server runs: a job (one accepted request) and its outcome.

The execution machinery around it lives apart, one responsibility per module: ``store`` keeps v2
jobs across restarts, ``queue`` holds the jobs waiting per endpoint, ``pool`` loads pipelines per
device, and ``engine`` runs jobs on them (issue 12, "The serving core").
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from server.outputs import OutputFile

QUEUED, PROCESSING, COMPLETED, FAILED = "QUEUED", "PROCESSING", "COMPLETED", "FAILED"
CANCELLED_MESSAGE = "the request was cancelled"


@dataclass(eq=False)  # identity: a job is one request, kept in sets while it runs
class Job:
    id: str
    slug: str
    params: Any  # the pipeline's Params (pipelines/<package>/params.py)
    seed: int
    fmt: str
    quality: int
    key_id: str | None
    cost: float  # reserved from the key's credits at submission; refunded unless the job succeeds
    created: float
    deadline: float
    persistent: bool  # v2: kept in the store and answerable by id
    request_id: str = ""  # the X-Request-ID the job's log lines carry
    webhook: str | None = None  # v2: called on completion or failure
    public_base: str = ""  # v2: the base URL the webhook body's links use
    inputs: dict[str, Any] | None = None  # decoded; None for a job recovered after a restart
    attempts: int = 0
    future: Future = field(default_factory=Future, repr=False)
    cancel_requested: threading.Event = field(default_factory=threading.Event, repr=False)
    settled: bool = False  # the reservation was kept or refunded (exactly once)
    progress: tuple[int, int] | None = None  # (done, total) the pipeline last reported

    @property
    def cancelled(self) -> bool:
        """The client gave up (v1 disconnect or deadline) or asked to cancel (v2): do not run or
        charge it; a running job stops at its pipeline's next stage boundary."""
        return self.cancel_requested.is_set() or self.future.cancelled()


@dataclass
class Outcome:
    files: list[OutputFile]
    seed: int
    queue_time: float
    inference_time: float
    total_time: float
    cost: float
    remaining_credits: float
