"""Segmind's error envelope: every refusal is ``{"error": "<message>"}`` (segmind-api.md §3)."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelines.base import InputError, LicenceRefused, WeightsMissing

log = logging.getLogger("facefoundry")

MISSING_KEY = "Missing Authorization or x-api-key in header"
INVALID_KEY = "Unauthorized. API key is invalid or may have expired"
INSUFFICIENT_CREDITS = "Insufficient credits"
OUT_OF_MEMORY = "the GPU ran out of memory while running this request; try again or send a smaller input"


class ApiError(Exception):
    """A refusal with its HTTP status; the message is shown to the client as is."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA OOM, recognised without importing torch (torch.cuda.OutOfMemoryError or its message)."""
    return type(exc).__name__ == "OutOfMemoryError" or "CUDA out of memory" in str(exc)


def pipeline_failure(slug: str, exc: BaseException) -> ApiError:
    """Map what a pipeline raised to the client's answer: its fault (400), ours (500), or 503."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, InputError):
        return ApiError(400, str(exc))
    if isinstance(exc, (WeightsMissing, LicenceRefused)):
        return ApiError(503, str(exc))
    if is_out_of_memory(exc):
        return ApiError(503, OUT_OF_MEMORY)
    # The traceback goes to the log only; the client gets the exception's first line.
    log.error("%s failed", slug, exc_info=exc)
    first_line = (str(exc).strip().splitlines() or [""])[0][:200]
    detail = f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__
    return ApiError(500, f"{slug} failed: {detail}")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return error_response(400, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.error("unhandled error on %s", request.url.path, exc_info=exc)
        return error_response(500, "internal server error")
