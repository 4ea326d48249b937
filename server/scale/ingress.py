"""The HTTP ingress of the Ray mode: the same FastAPI app, routes and API as the embedded server,
with ``RayEngine`` in place of the in-process queues, model pool and worker threads (issue 14).

An ingress replica keeps nothing of its own: jobs, inputs, keys, credits and rate limits are in
Redis, results in the shared outputs directory, so any replica answers any request and a replica
may die at any moment:

* v1: the call goes to the endpoint's deployment through its handle and the answer comes back in
  the same request; a runner that dies answers 503 (nothing charged), like an embedded restart.
* v2: the job is written to Redis, then dispatched under a token whose lease this replica renews
  while the job waits. A runner that dies mid-job is seen at once by the dispatcher (the call
  fails) and, should the dispatcher be gone too, by any replica when the lease lapses: the job
  runs again up to ``job_max_attempts``, then ends FAILED with the reason. Never lost.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import Future, InvalidStateError
from typing import Any

from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, RequestCancelledError

from pipelines import registry
from server.app import create_app
from server.engine import NOT_BUILT, SERVING_STATES, SHUTTING_DOWN_RETRY_S, not_built_message
from server.errors import ApiError
from server.jobs import CANCELLED_MESSAGE, COMPLETED, FAILED, QUEUED, Job, Outcome
from server.outputs import OutputStore
from server.queue import FULL_QUEUE_RETRY_S
from server.redis_store import RedisJobStore, new_token
from server.results import job_body
from server.pool import LOADING
from server.scale.runner import REPORT_STALE_S, Reply
from server.settings import Settings
from server.webhooks import WebhookSender

log = logging.getLogger("facefoundry.scale")

# A dispatch refused by a full Serve queue, or to a deployment that is (re)starting, is retried.
DISPATCH_RETRY_S = 1.0
RUNNER_STOPPED = "the replica running this request stopped; retry shortly"
NO_RUNNER = "no runner replica has reported yet"


def interrupted_reason(attempts: int) -> str:
    """Why a job ends FAILED when its last allowed run was cut off (the embedded server says the
    same of a restart)."""
    return f"the replica running this job stopped (attempt {attempts} of {attempts}); submit it again"


class RayEngine:
    """``server.engine.Engine``'s interface, over Ray Serve handles and the Redis store."""

    def __init__(self, settings: Settings, gatekeeper, metrics, store: RedisJobStore, handles: dict[str, Any]):
        if not isinstance(store, RedisJobStore):
            raise ValueError("--engine ray needs --store redis://… (every replica shares the jobs)")
        self.settings = settings
        self.gatekeeper = gatekeeper
        self.metrics = metrics
        self.store = store
        self.handles = handles
        self.slugs = [slug for slug in settings.pipelines if registry.is_built(slug) and slug in handles]
        self.outputs = OutputStore(settings.outputs_dir, settings.job_ttl_s)
        self.webhooks = WebhookSender(settings, metrics)
        self._held: dict[str, str] = {}  # v2 job id -> the token this replica dispatched it under
        self._calls: dict[str, Any] = {}  # v1 job id -> its DeploymentResponse (to cancel)
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False
        for slug in self.slugs:
            metrics.queue_depth.labels(slug).set_function(lambda slug=slug: self.store.depth(slug))

    # -- lifecycle (called by the app's lifespan) ---------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.webhooks.start()
        self._spawn(self._keep_leases())

    def drain(self) -> None:
        self._draining = True

    def stop(self) -> None:
        """Hand the jobs this replica holds back at once (their leases end now) rather than
        letting other replicas wait a whole lease for them."""
        self.drain()
        now = time.time()
        for job_id, token in list(self._held.items()):
            self.store.renew(job_id, token, QUEUED, now)
        if self._loop is not None:
            for task in list(self._tasks):
                self._loop.call_soon_threadsafe(task.cancel)
        self.webhooks.stop(0)

    def sweep(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.store.expire(now)
        self.outputs.sweep(now)

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- submission ---------------------------------------------------------------------------

    def check_accepting(self, slug: str) -> None:
        if self._draining:
            raise ApiError(503, "the server is shutting down; retry shortly",
                           {"Retry-After": str(SHUTTING_DOWN_RETRY_S)})
        waiting = self.store.depth(slug)
        if waiting >= self.settings.queue_max:
            raise ApiError(429, f"the server is busy: {waiting} {slug} requests are waiting; retry later",
                           {"Retry-After": str(FULL_QUEUE_RETRY_S)})

    def loaded(self, slug: str) -> Future:
        """Resolved at once unless every runner of the endpoint reports a failed load (503 with
        its reason); Serve itself holds requests until a runner is up."""
        future: Future = Future()
        reports = list(self._runner_reports(slug).values())
        if reports and all(r["state"] not in SERVING_STATES for r in reports) and reports[0]["detail"]:
            future.set_exception(ApiError(503, reports[0]["detail"], {"Retry-After": str(SHUTTING_DOWN_RETRY_S)}))
        else:
            future.set_result(None)
        return future

    def _runner_reports(self, slug: str) -> dict[str, dict]:
        return self.store.runner_reports(slug, since=time.time() - REPORT_STALE_S)

    def submit(self, job: Job, raw_inputs: dict[str, bytes]) -> None:
        self.check_accepting(job.slug)
        if not job.persistent:
            self._spawn(self._run_inline(job))
            return
        token = self.store_new_job(job, raw_inputs)
        self._spawn(self._dispatch(job.id, job.slug, token))

    def store_new_job(self, job: Job, raw_inputs: dict[str, bytes]) -> str:
        token = new_token()
        expires = job.created + self.settings.job_ttl_s
        self.store.save_inputs(job.id, raw_inputs, expires)
        self.store.insert(job, expires=expires, token=token)
        self.store.renew(job.id, token, QUEUED, time.time() + self.settings.job_lease_s)
        return token

    def abandon(self, job: Job) -> None:
        job.cancel_requested.set()
        call = self._calls.get(job.id)
        if call is not None:
            call.cancel()

    def cancel(self, job_id: str) -> str:
        row = self.store.get(job_id)
        status = self.store.cancel(job_id, time.time(), CANCELLED_MESSAGE)
        if not status:
            raise ApiError(409, f"request {job_id} has already finished")
        if status == FAILED:
            self.gatekeeper.refund(row["key_id"], row["cost"])
            self.store.drop_inputs(job_id)
            self._notify(job_id)
        return status

    def lookup(self, job_id: str) -> dict | None:
        row = self.store.get(job_id)
        if row is None or row["expires"] < time.time():
            return None
        return row

    # -- v1 -------------------------------------------------------------------------------------

    async def _run_inline(self, job: Job) -> None:
        call = self.handles[job.slug].run_inline.remote(job.params, job.inputs, job.seed, job.fmt, job.quality,
                                                         job.deadline)
        self._calls[job.id] = call
        try:
            reply: Reply = await call
        except (RequestCancelledError, asyncio.CancelledError):
            reply = Reply(status=409, message=CANCELLED_MESSAGE)
        except BackPressureError:
            reply = Reply(status=429, message=f"the server is busy: {job.slug} replicas are full; retry later",
                          headers={"Retry-After": str(FULL_QUEUE_RETRY_S)})
        except RayActorError:
            reply = Reply(status=503, message=RUNNER_STOPPED, headers={"Retry-After": str(SHUTTING_DOWN_RETRY_S)})
        finally:
            self._calls.pop(job.id, None)
        if reply.files is None or job.cancelled:
            self.gatekeeper.refund(job.key_id, job.cost)
            settle(job.future, error=reply.error() if reply.files is None else ApiError(409, CANCELLED_MESSAGE))
            return
        job.settled = True
        settle(job.future, outcome=Outcome(
            files=reply.files, seed=job.seed, queue_time=reply.started - job.created,
            inference_time=reply.finished - reply.started, total_time=reply.finished - job.created, cost=job.cost,
            remaining_credits=self.gatekeeper.balance(job.key_id)))

    # -- v2 -------------------------------------------------------------------------------------

    async def _dispatch(self, job_id: str, slug: str, token: str) -> None:
        """Hand the job to the endpoint's deployment and see it through: a runner that dies is
        replaced by the next attempt (the store decides whether one is left)."""
        self._held[job_id] = token
        try:
            while True:
                try:
                    if await self.handles[slug].run_stored.remote(job_id, token) in (COMPLETED, FAILED):
                        self._notify(job_id)  # the runner ended it (else whoever did has notified)
                    return
                except BackPressureError:
                    await asyncio.sleep(DISPATCH_RETRY_S)
                    continue
                except RayActorError as exc:
                    log.warning("the runner of v2 job %s stopped (%s)", job_id, type(exc).__name__)
                except Exception as exc:  # a fault in the runner's own code: as if it had stopped
                    log.error("running v2 job %s failed outside its pipeline", job_id, exc_info=exc)
                    await asyncio.sleep(DISPATCH_RETRY_S)
                action, token = await asyncio.to_thread(self._take_back, job_id, token)
                if action != "dispatch":
                    return
                self._held[job_id] = token
        finally:
            self._held.pop(job_id, None)

    def _take_back(self, job_id: str, token: str, lapsed: bool = False) -> tuple[str, str]:
        """Queue again (or fail, attempts spent) a job whose runner stopped: the one held under
        ``token``, or with ``lapsed`` one whose holder stopped renewing its lease."""
        now = time.time()
        attempts = self.settings.job_max_attempts
        action, new = self.store.reclaim(job_id, now, now + self.settings.job_lease_s, attempts,
                                         interrupted_reason(attempts), holder="" if lapsed else token)
        if action == "failed":
            row = self.store.get(job_id)
            self.gatekeeper.refund(row["key_id"], row["cost"])
            self.store.drop_inputs(job_id)
            self._notify(job_id)
        elif action == "dispatch":
            log.info("v2 job %s queued again after its runner stopped", job_id)
        return action, new

    async def _keep_leases(self) -> None:
        """Renew the leases of the jobs this replica holds while they wait; take over the jobs
        whose holder went silent."""
        lease = self.settings.job_lease_s
        while True:
            await asyncio.sleep(lease / 3)
            try:
                await asyncio.to_thread(self._renew_held)
                for job_id in await asyncio.to_thread(self.store.lapsed, time.time()):
                    row = await asyncio.to_thread(self.store.get, job_id)
                    action, token = await asyncio.to_thread(self._take_back, job_id, "", True)
                    if action == "dispatch" and row is not None:
                        self._spawn(self._dispatch(job_id, row["slug"], token))
            except Exception as exc:  # Redis briefly unreachable: the next round retries
                log.warning("renewing job leases failed: %s", exc)

    def _renew_held(self) -> None:
        until = time.time() + self.settings.job_lease_s
        for job_id, token in list(self._held.items()):
            self.store.renew(job_id, token, QUEUED, until)

    def _notify(self, job_id: str) -> None:
        """The v2 webhook of a job that just ended, as the embedded engine sends it."""
        row = self.store.get(job_id)
        if row is None or not row["webhook"] or row["status"] not in (COMPLETED, FAILED):
            return
        webhook = json.loads(row["webhook"])
        _, body, _ = job_body(row, webhook.get("base", ""), full=True)
        event = "completed" if row["status"] == COMPLETED else "failed"
        self.webhooks.send(webhook["url"], body, event, row["request_id"] or job_id)

    # -- state ----------------------------------------------------------------------------------

    def readiness(self) -> dict:
        """Engine.readiness's shape, over the endpoints' runner replicas (their reports in Redis):
        an endpoint serves when one of its replicas can."""
        pipelines, reasons = {}, {}
        for slug in self.settings.pipelines:
            if not registry.is_built(slug):
                pipelines[slug] = {"state": NOT_BUILT, "detail": not_built_message(slug)}
                continue
            reports = self._runner_reports(slug)
            serving = [r for r in reports.values() if r["state"] in SERVING_STATES]
            best = (serving or list(reports.values()) or [{"state": LOADING, "detail": NO_RUNNER, "components": []}])[0]
            pipelines[slug] = {"state": best["state"], "detail": best["detail"],
                               "devices": {name: r["state"] for name, r in reports.items()},
                               "runtime": [r["runtime"] for r in reports.values() if r["runtime"]],
                               "components": best["components"]}
            if not serving:
                reasons[slug] = best["detail"] or best["state"]
        if self._draining:
            reasons["server"] = "shutting down"
        loading = [slug for slug, reason in reasons.items() if pipelines.get(slug, {}).get("state") == LOADING]
        return {"ready": not reasons, "reasons": reasons, "loading": loading, "engine": "ray",
                "weights_profile": self.settings.weights, "weights_dir": str(self.settings.weights_dir),
                "queue_depth": sum(self.store.depth(slug) for slug in self.slugs), "pipelines": pipelines}


def settle(future: Future, outcome: Outcome | None = None, error: ApiError | None = None) -> None:
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(outcome)
    except InvalidStateError:  # the v1 client gave up a moment ago
        pass


@serve.ingress()
class Ingress:
    """The FastAPI app as a Serve deployment, built in each replica (a live app holds locks and
    clients that cannot be pickled), with ``RayEngine`` over the endpoints' handles."""

    def __init__(self, settings_values: dict[str, Any], runners: dict[str, Any]):
        self.settings = Settings(**settings_values)
        self.runners = runners

    def __serve_build_asgi_app__(self):
        def engine(settings, gatekeeper, metrics, store):
            return RayEngine(settings, gatekeeper, metrics, store, self.runners)

        app = create_app(self.settings, engine_factory=engine)
        app.add_middleware(ReplicaHeader, name=serve.get_replica_context().replica_id.unique_id)
        return app


class ReplicaHeader:
    """``x-facefoundry-replica`` on every response: which ingress replica answered (a request
    path across replicas can be read from a client's log). And ``x-request-id`` left to Serve's
    proxy, which gives every request one before the app sees it and echoes it on the response:
    the app's own copy would send the header twice (segmind-api.md §2.3: each header once)."""

    def __init__(self, app, name: str):
        self.app = app
        self.name = name.encode()

    async def __call__(self, scope, receive, send):
        async def send_with_name(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message["headers"] = [*headers, (b"x-facefoundry-replica", self.name)]
            await send(message)

        await self.app(scope, receive, send_with_name)
