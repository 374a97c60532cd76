"""The live dashboard (`fer-pipeline dashboard`): a web page with each camera's annotated
video, a live emotion chart per track and the pipeline's health, plus ``/metrics``.

Every asset is served by the app itself (no CDN), from the package's ``static/`` folder;
the script draws the charts on plain canvases and builds every element with textContent
(names coming from cameras never become HTML). What the page shows comes from
``DashboardState`` (``state.py``).
"""

from __future__ import annotations

import hmac
from importlib import resources

import redis

from fer_pipeline.dashboard.state import DashboardState
from fer_pipeline.settings import Settings
from fer_pipeline.transport import Transport


def _asset(name: str) -> str:
    return resources.files("fer_pipeline.dashboard").joinpath("static", name).read_text(encoding="utf-8")


def create_app(settings: Settings, transport: Transport):
    """The FastAPI app: ``/`` (the page), ``/static/*``, ``/api/*`` (JSON and JPEG), ``/metrics``."""
    from fastapi import FastAPI, HTTPException, Response
    from fastapi.responses import HTMLResponse, JSONResponse
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from fer_pipeline.labels import EMOTIONS
    from fer_pipeline.metrics import registry_for

    index_html, app_js_text, app_css_text = _asset("index.html"), _asset("app.js"), _asset("app.css")
    registry, latency = registry_for(transport)
    state = DashboardState(settings, transport, latency)
    app = FastAPI(title="fer-pipeline dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.dashboard = state
    no_cache = {"Cache-Control": "no-store"}
    token = settings.dashboard.token.get_secret_value() if settings.dashboard.token is not None else None

    @app.middleware("http")
    async def _authorized(request, call_next):
        # People's faces and emotions: /api/* and /metrics need the token when one is set. The
        # page, its script and style, and /healthz (the container's health check) are public.
        path = request.url.path
        if token is not None and (path.startswith("/api/") or path == "/metrics"):
            header = request.headers.get("authorization", "")
            given = header[7:] if header.lower().startswith("bearer ") else request.query_params.get("token", "")
            if not hmac.compare_digest(given.encode(), token.encode()):
                return JSONResponse({"error": "a valid token is needed (Authorization: Bearer, or ?token=)"},
                                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    @app.exception_handler(redis.RedisError)
    async def _redis_down(request, exc):  # the page keeps polling and recovers when Redis is back
        return JSONResponse({"error": f"Redis unavailable: {type(exc).__name__}"}, status_code=503)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return index_html

    @app.get("/static/app.js")
    def app_js() -> Response:
        return Response(app_js_text, media_type="text/javascript")

    @app.get("/static/app.css")
    def app_css() -> Response:
        return Response(app_css_text, media_type="text/css")

    @app.get("/api/cameras")
    def cameras() -> dict:
        return {"cameras": state.camera_ids(), "emotions": list(EMOTIONS)}

    @app.get("/api/status")
    def status() -> dict:
        return state.status()

    @app.get("/api/frame/{camera_id}")
    def frame(camera_id: str) -> Response:
        got = state.frame(camera_id)
        if got is None:
            raise HTTPException(404, f"no frames from camera {camera_id!r}")
        jpeg, index, faces = got
        return Response(jpeg, media_type="image/jpeg",
                        headers={**no_cache, "X-Frame-Index": str(index), "X-Faces": str(faces)})

    @app.get("/api/tracks/{camera_id}")
    def tracks(camera_id: str, seconds: float = 30.0) -> dict:
        return {"camera": camera_id, "tracks": state.tracks(camera_id, min(max(seconds, 1.0), 600.0))}

    @app.get("/metrics")
    def metrics() -> Response:
        state.poll()  # observe the latest labels' latencies before exporting
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz() -> dict:
        transport.ping()
        return {"ok": True}

    return app
