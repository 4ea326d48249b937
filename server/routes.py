"""The HTTP surface, Segmind's shape exactly (segmind-api.md §1, §2, §6); no model code here."""
from __future__ import annotations

import asyncio
import base64
import time
import uuid

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import ValidationError

from pipelines import registry
from server.auth import Caller
from server.bodies import parse_json_object
from server.engine import Engine, not_built_message
from server.errors import ApiError
from server.jobs import CANCELLED_MESSAGE, FAILED, Job, Outcome
from server.protocol import ENDPOINTS, Endpoint, SegmindRequest, describe_validation_error, pipeline_params
from server.results import job_body, request_urls
from server.urls import public_base_url
from server.webhooks import check_webhook_url

ERROR_SCHEMA = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
ERROR_RESPONSES = {
    str(code): {"description": text, "content": {"application/json": {"schema": ERROR_SCHEMA}}}
    for code, text in (
        (400, "Invalid parameters, undecodable or refused input, or no face found"),
        (401, "Missing or invalid API key"),
        (403, "The key may not use this model"),
        (406, "Insufficient credits, or a body that is not JSON"),
        (413, "Body or input file too large"),
        (429, "Rate limited (x-rate-limit-reset-at-utc) or queue full (Retry-After)"),
        (500, "The pipeline failed"),
        (501, "The endpoint is not available in this version of facefoundry"),
        (503, "Weights not installed, pipeline unavailable or loading, out of GPU memory, or shutting down (Retry-After)"),
        (504, "The request did not finish before its deadline"),
    )
}
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
# How often a waiting v1 request checks whether its client is still connected.
DISCONNECT_POLL_S = 0.25


def engine_of(request: Request) -> Engine:
    return request.app.state.engine


def public_base(request: Request) -> str:
    """Where clients reach us: the configured URL, else the request's (forwarded) scheme and host.

    Absolute URLs matter: the segmind SDK joins relative ones under /v1 and 404s (segmind-api.md §4.1).
    """
    settings = request.app.state.settings
    return public_base_url(settings.public_base_url, request.headers, request.client.host if request.client else None,
                           request.url.scheme, request.scope.get("server"), request.scope.get("root_path", ""),
                           settings.trusted_proxy_networks)


def authenticate(request: Request) -> Caller:
    caller = request.app.state.gatekeeper.authenticate(request.headers)
    request.state.caller = caller
    return caller


async def read_json_object(request: Request) -> dict:
    limit = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body is larger than the {limit} byte limit")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"the request body is larger than the {limit} byte limit")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in FORM_TYPES:
        # Segmind answers a non-JSON body with 406 "Invalid content type" (segmind-api.md §3).
        raise ApiError(406, "Invalid content type: send a JSON body with Content-Type: application/json")
    return await run_in_threadpool(parse_json_object, bytes(body), request.app.state.settings.max_json_depth)


async def accept_job(request: Request, endpoint: Endpoint, persistent: bool) -> tuple[Job, SegmindRequest]:
    """Everything before the queue: auth, limits, validation, readiness, media, credits; then queue
    the job. The cost is reserved last, so every earlier refusal costs nothing."""
    settings = request.app.state.settings
    engine = engine_of(request)
    gatekeeper = request.app.state.gatekeeper
    caller = authenticate(request)
    cost = settings.cost_of(endpoint.slug)
    gatekeeper.admit(caller, endpoint.slug, cost)
    body = await read_json_object(request)
    try:
        params = endpoint.request.model_validate(body)
    except ValidationError as exc:
        raise ApiError(400, describe_validation_error(endpoint.request, exc)) from None
    engine.check_accepting(endpoint.slug)
    # A v1 call waits here for a loading endpoint (holding no thread and no other endpoint's queue);
    # a v2 job is queued at once and waits in the queue. A remembered load failure is a 503 for both.
    loading = engine.loaded(endpoint.slug)
    if not persistent or loading.done():
        await asyncio.wrap_future(loading)
    webhook = params.webhook if persistent else None
    if webhook:
        await check_webhook_url(webhook, settings)
    raw, inputs = await request.app.state.media.load_inputs(endpoint, params)
    created = time.time()
    given_id = request.state.request_id_given
    job = Job(
        id=str(uuid.uuid4()) if given_id else request.state.request_id, slug=endpoint.slug,
        seed=params.chosen_seed(), params=pipeline_params(registry.params_class(endpoint.slug), params),
        fmt=endpoint.output_format(params), quality=endpoint.output_quality(params),
        key_id=caller.key_id, cost=cost, created=created, deadline=created + settings.request_timeout_s,
        persistent=persistent, request_id=request.state.request_id, webhook=webhook,
        public_base=public_base(request) if webhook else "", inputs=inputs,
    )
    gatekeeper.reserve(caller, cost)
    try:
        engine.submit(job, raw)
    except BaseException:
        gatekeeper.refund(caller.key_id, cost)
        raise
    return job, params


async def outcome_of(request: Request, job: Job) -> Outcome:
    """Wait for a v1 job; a client that disconnects or a deadline that passes abandons it (it is
    dropped or stopped at its next stage boundary, and never charged)."""
    engine = engine_of(request)
    future = asyncio.wrap_future(job.future)
    while True:
        remaining = job.deadline - time.time()
        if remaining <= 0:
            future.cancel()
            engine.abandon(job)
            timeout = request.app.state.settings.request_timeout_s
            raise ApiError(504, f"the request did not finish within {timeout:g} s")
        done, _ = await asyncio.wait({future}, timeout=min(DISCONNECT_POLL_S, remaining))
        if done:
            return future.result()
        if await request.is_disconnected():
            future.cancel()
            engine.abandon(job)
            # Nobody reads this answer; nginx's 499 names the case in the access log.
            raise ApiError(499, "the client closed the request")


def make_v1_handler(endpoint: Endpoint):
    async def run_v1(request: Request):
        job, params = await accept_job(request, endpoint, persistent=False)
        outcome = await outcome_of(request, job)
        headers = {
            "X-remaining-credits": str(outcome.remaining_credits),
            "X-generation-time": f"{outcome.inference_time:.3f}",
            "x-seed-value": str(outcome.seed),
            "x-cost": str(outcome.cost),
        }
        first = outcome.files[0]
        if endpoint.wants_base64(params):
            key = "video" if endpoint.output == "video" else "image"
            return JSONResponse({key: base64.b64encode(first.data).decode()}, headers=headers)
        return Response(first.data, media_type=first.mime, headers=headers)

    return run_v1


def make_v2_handler(endpoint: Endpoint):
    async def submit_v2(request: Request):
        job, _ = await accept_job(request, endpoint, persistent=True)
        body = {"request_id": job.id, "status": "QUEUED", **request_urls(public_base(request), job.id)}
        return JSONResponse(body, headers={"x-seed-value": str(job.seed)})

    return submit_v2


def make_not_built_handler(slug: str):
    async def not_built(request: Request):
        """Answered before auth, rate limit and validation (issue 9, "Honest answers")."""
        raise ApiError(501, not_built_message(slug))

    return not_built


def stored_job(request: Request, request_id: str) -> dict:
    caller = authenticate(request)
    row = engine_of(request).lookup(request_id)
    # Another key's job is answered exactly like an unknown one.
    if row is None or (caller.key_id is not None and row["key_id"] != caller.key_id):
        raise ApiError(404, f"Request {request_id} not found")
    return row


def stored_job_response(request: Request, request_id: str, full: bool) -> JSONResponse:
    status, body, headers = job_body(stored_job(request, request_id), public_base(request), full)
    return JSONResponse(body, status_code=status, headers=headers)


def build_router(enabled: list[str]) -> APIRouter:
    router = APIRouter()
    for slug in enabled:
        if not registry.is_built(slug):
            for path in (f"/v1/{slug}", f"/v2/{slug}", f"/{slug}"):
                router.add_api_route(path, make_not_built_handler(slug), methods=["POST"], include_in_schema=False)
            continue
        endpoint = ENDPOINTS[slug]
        body_schema = {"requestBody": {"required": True, "content": {
            "application/json": {"schema": endpoint.request.model_json_schema()}}}}
        output_media = ("video/mp4",) if endpoint.output == "video" else ("image/png", "image/jpeg", "image/webp")
        v1_ok = {"200": {"description": f"The {endpoint.output} (or JSON with base64 when base64=true)",
                         "content": {m: {} for m in output_media}}}
        router.add_api_route(
            f"/v1/{slug}", make_v1_handler(endpoint), methods=["POST"], tags=[endpoint.title],
            summary=f"{endpoint.title} (synchronous)", operation_id=f"v1_{slug.replace('-', '_')}",
            description=_v1_description(endpoint), openapi_extra={**body_schema, "responses": {**v1_ok, **ERROR_RESPONSES}},
            response_class=Response,
        )
        router.add_api_route(
            f"/v2/{slug}", make_v2_handler(endpoint), methods=["POST"], tags=[endpoint.title],
            summary=f"{endpoint.title} (queued)", operation_id=f"v2_{slug.replace('-', '_')}",
            description="Queue the request; poll `status_url`, then GET `response_url`.",
            openapi_extra={**body_schema, "responses": ERROR_RESPONSES},
        )
        # The SDK posts to the bare host when base_url lacks /v1 (segmind-api.md §4.1).
        router.add_api_route(f"/{slug}", make_v1_handler(endpoint), methods=["POST"], include_in_schema=False)

    @router.get("/v2/requests/{request_id}/status", tags=["Requests"], responses=ERROR_RESPONSES)
    async def request_status(request: Request, request_id: str):
        """QUEUED / PROCESSING / COMPLETED; FAILED comes with HTTP 422 and the error."""
        return stored_job_response(request, request_id, full=False)

    @router.get("/v2/requests/{request_id}", tags=["Requests"], responses=ERROR_RESPONSES)
    async def request_result(request: Request, request_id: str):
        """The full result: `output`, `images` (or `video`) and `metrics`."""
        return stored_job_response(request, request_id, full=True)

    @router.get("/v1/requests/{request_id}", tags=["Requests"], responses=ERROR_RESPONSES)
    async def request_result_v1(request: Request, request_id: str):
        """Alias of GET /v2/requests/{id} (Segmind's `poll_url`)."""
        return stored_job_response(request, request_id, full=True)

    @router.post("/v2/requests/{request_id}/cancel", tags=["Requests"], responses=ERROR_RESPONSES)
    async def request_cancel(request: Request, request_id: str):
        """facefoundry extra: cancel a queued or running job; it is never charged. A queued job
        ends at once (FAILED, "the request was cancelled"); a running one stops at its next
        stage (202, PROCESSING until then). 409 when it has already finished."""
        stored_job(request, request_id)
        status = engine_of(request).cancel(request_id)
        body = {"request_id": request_id, "status": status}
        if status == FAILED:
            return JSONResponse({**body, "error": CANCELLED_MESSAGE})
        return JSONResponse(body, status_code=202)

    @router.get("/v1/get-user-credits", tags=["Account"], responses=ERROR_RESPONSES)
    async def user_credits(request: Request):
        """The calling key's balance."""
        caller = authenticate(request)
        return {"credits": request.app.state.gatekeeper.remaining(caller), "free-credits": 0.0}

    @router.get("/outputs/{name}", tags=["Outputs"])
    async def output_file(request: Request, name: str):
        """A v2 result file; the name is random and expires with its job."""
        path = engine_of(request).outputs.path(name)
        if path is None:
            raise ApiError(404, "output not found (it may have expired)")
        return FileResponse(path)

    @router.get("/health", tags=["Operations"])
    async def health():
        """The process is alive."""
        return {"status": "ok"}

    @router.get("/ready", tags=["Operations"])
    async def ready(request: Request):
        """Per endpoint: loaded / loading / not loaded / unloaded (idle) / missing weights / licence
        refused / unavailable / failed / not built, the device, dtype and onnxruntime providers in
        use, and each loaded component's licence. 503, with `reasons`, while an enabled endpoint
        cannot serve (loading, weights missing, licence refused, failed) or the server is stopping."""
        report = engine_of(request).readiness()
        return JSONResponse(report, status_code=200 if report["ready"] else 503)

    @router.get("/metrics", tags=["Operations"])
    async def metrics(request: Request):
        """Prometheus metrics."""
        return Response(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4")

    async def unknown_model(request: Request, slug: str):
        if slug in ENDPOINTS and not registry.is_built(slug):
            raise ApiError(501, not_built_message(slug))
        authenticate(request)
        if slug in ENDPOINTS:
            raise ApiError(404, f"Model {slug} is not enabled on this server")
        raise ApiError(404, f"Model {slug} not found")

    for version in ("v1", "v2"):
        router.add_api_route(f"/{version}/{{slug}}", unknown_model, methods=["POST"], include_in_schema=False)
    return router


def _v1_description(endpoint: Endpoint) -> str:
    if endpoint.output == "video":
        return ("Returns the mp4 as the body (`video/mp4`), or `{\"video\": \"<base64>\"}` when `base64` is true.")
    text = "Returns the image as the body (Content-Type by format)"
    if "base64" in endpoint.request.model_fields:
        text += ", or `{\"image\": \"<base64>\"}` when `base64` is true"
    if endpoint.slug == "consistent-character":
        text += ". Several images: v1 returns the first, v2's `images` lists them all"
    return text + "."
