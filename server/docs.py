"""``/docs`` (Swagger UI) and ``/redoc`` served from files installed with the package.

FastAPI's default pages load their scripts from a CDN, so on the air-gapped installs this
server is meant for they are blank (issue 13, "Offline"). The ``fastapi-offline`` package (MIT)
ships the Swagger UI (Apache-2.0) and ReDoc (MIT) bundles; only its static files are used.
"""
from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs-assets"


def install_offline_docs(app: FastAPI) -> None:
    """Mount the bundled assets and the two pages; the app must be built with
    ``docs_url=None, redoc_url=None`` so that FastAPI's CDN pages are not registered."""
    assets = files("fastapi_offline") / "static"
    app.mount(ASSETS_URL, StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request):
        # Relative to root_path, as FastAPI's own pages are, so they work behind a path prefix.
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + app.openapi_url, title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css", swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request):
        root = request.scope.get("root_path", "").rstrip("/")
        return get_redoc_html(
            openapi_url=root + app.openapi_url, title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js", redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
