"""The production runner, holding chosen v2 jobs mid-run so a test can kill the replica that runs
them or cancel them: a job whose X-Request-ID is ``hold<N>-…`` waits on each of its first N
attempts, after its claim (PROCESSING, attempt counted, runner recorded), until the replica is
killed or the job cancelled (it then goes on, and the pipeline stops at its first stage boundary)."""
from __future__ import annotations

import re
import time

from server.jobs import Job
from server.scale.runner import EndpointRunner

HOLD = re.compile(r"^hold(\d+)-")


class HoldingRunner(EndpointRunner):
    def _finish_stored(self, job: Job, token: str, started: float) -> str:
        held = HOLD.match(job.request_id)
        if held and job.attempts < int(held.group(1)):
            while not self.jobs.cancel_requested(job.id):
                time.sleep(0.05)
        return super()._finish_stored(job, token, started)
