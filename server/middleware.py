"""The conventions every response follows, as one ASGI middleware (issue 12, "Operations").

* ``x-request-id`` on every response, errors included: the client's ``X-Request-ID`` passed
  through when it sends a usable one, else a new UUID; bound to every log line of the request.
* A 200 to an authenticated caller carries ``X-remaining-credits`` (segmindapi reads it on every
  200 and crashes without it, segmind-api.md §2.3).
* Every 429 and 503 carries ``Retry-After``.
* One access-log line per request; status polls, health, readiness and metrics at debug level.

A pure ASGI middleware rather than ``@app.middleware("http")``: it wraps the exception handlers,
so an unexpected error's 500 gets the same headers, and it leaves ``request.is_disconnected``
working for the v1 handlers.
"""
from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders

from server.auth import Gatekeeper
from server.errors import error_response
from server.logs import REQUEST_ID
from server.metrics import Metrics
from server.settings import Settings

log = logging.getLogger("facefoundry.access")

# What a client may send as its request id: printable ASCII without spaces, as a header value
# holds it, of a length log systems index.
USABLE_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
DEFAULT_RETRY_AFTER_S = 5
QUIET_PATHS = re.compile(r"^/(v1|v2)/requests/[^/]+(/status)?$|^/(health|ready|metrics)$")


def request_id_of(headers: Headers) -> tuple[str, bool]:
    """(the request's id, whether the client chose it)."""
    given = headers.get("x-request-id", "")
    if USABLE_REQUEST_ID.match(given):
        return given, True
    return str(uuid.uuid4()), False


def is_quiet(method: str, path: str) -> bool:
    return method == "GET" and bool(QUIET_PATHS.match(path))


class RequestContext:
    def __init__(self, app, settings: Settings, gatekeeper: Gatekeeper, metrics: Metrics):
        self.app = app
        self.settings = settings
        self.gatekeeper = gatekeeper
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id, given = request_id_of(Headers(scope=scope))
        state = scope.setdefault("state", {})
        state.update(request_id=request_id, request_id_given=given)
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        answered: dict[str, int] = {}

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                answered["status"] = message["status"]
                self.add_headers(MutableHeaders(scope=message), message["status"], state)
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            log.error("unhandled error on %s", scope.get("path"), exc_info=exc)
            if "status" in answered:
                raise
            await error_response(500, "internal server error")(scope, receive, send_with_headers)
        finally:
            self.account(scope, answered.get("status", 500), time.perf_counter() - started)
            REQUEST_ID.reset(token)

    def add_headers(self, headers: MutableHeaders, status: int, state: dict) -> None:
        headers["x-request-id"] = state["request_id"]
        caller = state.get("caller")
        if status == 200 and caller is not None and "x-remaining-credits" not in headers:
            headers["X-remaining-credits"] = str(self.gatekeeper.remaining(caller))
        if status in (429, 503) and "retry-after" not in headers:
            headers["Retry-After"] = str(DEFAULT_RETRY_AFTER_S)
        if self.settings.weights == "tiny":
            headers["x-weights-profile"] = "tiny"

    def account(self, scope, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", "unmatched")
        method, path = scope["method"], scope["path"]
        self.metrics.requests.labels(route, method, str(status)).inc()
        self.metrics.latency.labels(route, method).observe(seconds)
        level = logging.DEBUG if is_quiet(method, path) else logging.INFO
        log.log(level, "%s %s %d %.3fs", method, path, status, seconds)
