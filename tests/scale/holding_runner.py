"""The production runner, holding chosen v2 jobs mid-run so a test can kill the replica that runs
them: a job whose X-Request-ID is ``hold<N>-…`` blocks on each of its first N attempts, after
its claim (PROCESSING, attempt counted, runner recorded), as a pipeline stuck in a long stage."""
from __future__ import annotations

import re
import threading

from server.jobs import Job
from server.scale.runner import EndpointRunner

HOLD = re.compile(r"^hold(\d+)-")


class HoldingRunner(EndpointRunner):
    def _finish_stored(self, job: Job, token: str, started: float) -> str:
        held = HOLD.match(job.request_id)
        if held and job.attempts < int(held.group(1)):
            threading.Event().wait()  # until the test kills this replica
        return super()._finish_stored(job, token, started)
