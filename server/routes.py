"""The HTTP surface, Segmind's shape exactly (segmind-api.md §1, §2, §6); no model code here."""
from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import ValidationError

from server.auth import Caller
from server.errors import ApiError
from server.jobs import COMPLETED, FAILED, Engine, Job
from server.bodies import parse_json_object
from pipelines import registry
from server.protocol import ENDPOINTS, Endpoint, SegmindRequest, describe_validation_error, pipeline_params
from server.urls import public_base_url

ERROR_SCHEMA = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
ERROR_RESPONSES = {
    str(code): {"description": text, "content": {"application/json": {"schema": ERROR_SCHEMA}}}
    for code, text in (
        (400, "Invalid parameters, undecodable or refused input, or no face found"),
        (401, "Missing or invalid API key"),
        (403, "The key may not use this model"),
        (406, "Insufficient credits, or a body that is not JSON"),
        (413, "Body or input file too large"),
        (429, "Rate limited (x-rate-limit-reset-at-utc) or queue full"),
        (500, "The pipeline failed"),
        (503, "Weights not installed, pipeline unavailable, or out of GPU memory"),
        (504, "The request did not finish before its deadline"),
    )
}
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


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
    """Everything before the queue: auth, limits, validation, media; then queue the job."""
    settings = request.app.state.settings
    engine = engine_of(request)
    caller = authenticate(request)
    cost = settings.cost_of(endpoint.slug)
    request.app.state.gatekeeper.admit(caller, endpoint.slug, cost)
    body = await read_json_object(request)
    try:
        params = endpoint.request.model_validate(body)
    except ValidationError as exc:
        raise ApiError(400, describe_validation_error(endpoint.request, exc)) from None
    engine.queue.ensure_room()
    await run_in_threadpool(engine.ensure_loaded, endpoint.slug)
    raw, inputs = await request.app.state.media.load_inputs(endpoint, params)
    created = time.time()
    job = Job(
        id=str(uuid.uuid4()), slug=endpoint.slug, seed=params.chosen_seed(),
        params=pipeline_params(registry.params_class(endpoint.slug), params),
        fmt=endpoint.output_format(params), quality=endpoint.output_quality(params),
        key_id=caller.key_id, cost=cost, created=created,
        deadline=created + settings.request_timeout_s, persistent=persistent, inputs=inputs,
    )
    engine.submit(job, raw)
    request.state.request_id = job.id
    return job, params


def make_v1_handler(endpoint: Endpoint):
    async def run_v1(request: Request):
        job, params = await accept_job(request, endpoint, persistent=False)
        engine = engine_of(request)
        try:
            outcome = await asyncio.wait_for(asyncio.wrap_future(job.future), job.deadline - time.time())
        except (asyncio.TimeoutError, asyncio.CancelledError):
            engine.cancel(job)
            timeout = request.app.state.settings.request_timeout_s
            raise ApiError(504, f"the request did not finish within {timeout:g} s") from None
        headers = {
            "x-request-id": job.id,
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


def request_urls(base: str, job_id: str) -> dict[str, str]:
    return {
        "poll_url": f"{base}/v1/requests/{job_id}",
        "status_url": f"{base}/v2/requests/{job_id}/status",
        "response_url": f"{base}/v2/requests/{job_id}",
    }


def make_v2_handler(endpoint: Endpoint):
    async def submit_v2(request: Request):
        job, _ = await accept_job(request, endpoint, persistent=True)
        body = {"request_id": job.id, "status": "QUEUED", **request_urls(public_base(request), job.id)}
        return JSONResponse(body, headers={"x-request-id": job.id, "x-seed-value": str(job.seed)})

    return submit_v2


def failure_metrics(row: dict) -> dict:
    started = row["started"] or row["finished"]
    return {
        "inference_time": round(row["finished"] - started, 3),
        "queue_time": round(started - row["created"], 3),
        "total_time": round(row["finished"] - row["created"], 3),
    }


def job_body(request: Request, row: dict, full: bool) -> JSONResponse:
    """The status (light) or result (full) body of a stored v2 job, Segmind's shape (§1, §6)."""
    job_id = row["id"]
    base = public_base(request)
    if row["status"] == FAILED:
        body = {"status": FAILED, "request_id": job_id, "error": row["error"], "metrics": failure_metrics(row)}
        return JSONResponse(body, status_code=422)
    if row["status"] != COMPLETED:
        urls = request_urls(base, job_id)
        return JSONResponse({"status": row["status"], "request_id": job_id, "status_url": urls["status_url"],
                             "response_url": urls["response_url"], "metrics": {}})
    result = json.loads(row["result"])
    headers = {"x-seed-value": str(result["seed"]), "x-cost": str(result["metrics"]["cost"])}
    if not full:
        return JSONResponse({"status": COMPLETED, "request_id": job_id,
                             "metrics": {"inference_time": result["metrics"]["inference_time"]}}, headers=headers)
    files = [
        {"url": f"{base}/outputs/{f['name']}" if "name" in f else f["data_uri"], "content_type": f["content_type"],
         "file_name": f["file_name"], "file_size": f["file_size"]}
        for f in result["files"]
    ]
    body = {"status": COMPLETED, "request_id": job_id, "output": files[0]["url"], "seed": result["seed"]}
    if result["kind"] == "video":
        body["video"] = {"url": files[0]["url"], "content_type": files[0]["content_type"],
                         "file_name": files[0]["file_name"], "file_size": files[0]["file_size"]}
    else:
        body["images"] = files
    body["metrics"] = result["metrics"]
    return JSONResponse(body, headers=headers)


def stored_job(request: Request, request_id: str) -> dict:
    caller = authenticate(request)
    row = engine_of(request).lookup(request_id)
    # Another key's job is answered exactly like an unknown one.
    if row is None or (caller.key_id is not None and row["key_id"] != caller.key_id):
        raise ApiError(404, f"Request {request_id} not found")
    request.state.request_id = request_id
    return row


def build_router(enabled: list[str]) -> APIRouter:
    router = APIRouter()
    for slug in enabled:
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
        return job_body(request, stored_job(request, request_id), full=False)

    @router.get("/v2/requests/{request_id}", tags=["Requests"], responses=ERROR_RESPONSES)
    async def request_result(request: Request, request_id: str):
        """The full result: `output`, `images` (or `video`) and `metrics`."""
        return job_body(request, stored_job(request, request_id), full=True)

    @router.get("/v1/requests/{request_id}", tags=["Requests"], responses=ERROR_RESPONSES)
    async def request_result_v1(request: Request, request_id: str):
        """Alias of GET /v2/requests/{id} (Segmind's `poll_url`)."""
        return job_body(request, stored_job(request, request_id), full=True)

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
        """Per pipeline: loaded / not loaded / loading / missing weights / unavailable, and each
        loaded component's licence. 503 while a pipeline is loading."""
        report = engine_of(request).readiness()
        return JSONResponse(report, status_code=200 if report["ready"] else 503)

    @router.get("/metrics", tags=["Operations"])
    async def metrics(request: Request):
        """Prometheus metrics."""
        return Response(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4")

    async def unknown_model(request: Request, slug: str):
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
