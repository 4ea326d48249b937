"""The FastAPI application: wiring of settings, keys, the job engine, routes and middleware.

Run with ``facefoundry serve`` (or ``uvicorn --factory server.app:create_app``). This package
never imports torch; pipelines are reached only through ``pipelines.registry``.
"""
from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from server.auth import Gatekeeper
from server.backends import open_backend
from server.datafiles import secure_data_paths
from server.docs import install_offline_docs
from server.engine import Engine
from server.errors import install_error_handlers
from server.media import MediaLoader
from server.metrics import Metrics
from server.middleware import RequestContext
from server.routes import build_router
from server.settings import Settings

log = logging.getLogger("facefoundry")
PLAYGROUND_DIR = Path(__file__).parent / "static" / "playground"

DESCRIPTION = """Self-hosted, drop-in replacement for Segmind's face endpoints.

Point the `segmind` SDK at it with `SegmindClient(base_url="https://<host>/v1")`. Authenticate with
`x-api-key` or `Authorization: Bearer`. Errors are `{"error": "<message>"}`. Media fields take an
http(s) URL, raw base64 or a data URI."""


def create_app(settings: Settings | None = None, engine_factory=Engine) -> FastAPI:
    """``engine_factory(settings, gatekeeper, metrics, job_store)``: the embedded ``Engine``, or
    the Ray mode's (server.scale.ingress)."""
    settings = settings or Settings()
    metrics = Metrics()
    backend = open_backend(settings)
    gatekeeper = Gatekeeper(settings, backend.keys, backend.limiter)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        secure_data_paths(settings)
        engine = engine_factory(settings, gatekeeper, metrics, backend.jobs)
        app.state.engine = engine
        engine.start()
        sweeper = asyncio.create_task(_sweep_forever(engine, settings))
        try:
            yield
        finally:
            sweeper.cancel()
            await asyncio.to_thread(engine.stop)

    app = FastAPI(title="facefoundry", version="0.1.0", description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    install_offline_docs(app)
    app.state.settings = settings
    app.state.media = MediaLoader(settings)
    app.state.metrics = metrics
    app.state.gatekeeper = gatekeeper
    install_error_handlers(app)
    app.include_router(build_router(settings.pipelines))
    # The browser playground (issue 15): static files, left out of the OpenAPI schema like /docs.
    app.add_api_route("/playground", playground_redirect, include_in_schema=False)
    app.mount("/playground", StaticFiles(directory=PLAYGROUND_DIR, html=True), name="playground")

    app.add_middleware(RequestContext, settings=settings, gatekeeper=gatekeeper, metrics=metrics)
    return app


def playground_redirect() -> RedirectResponse:
    """/playground -> /playground/, where the page's relative links resolve; relative, so that it
    also holds behind a path prefix."""
    return RedirectResponse("playground/")


async def _sweep_forever(engine: Engine, settings: Settings) -> None:
    interval = min(60.0, settings.job_ttl_s / 4, (settings.idle_unload_s or 240.0) / 4)
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(engine.sweep)
        except Exception as exc:
            log.warning("sweeping expired jobs failed: %s", exc)
