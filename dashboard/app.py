"""The live dashboard (`fer-pipeline dashboard`): a web page with each camera's annotated
video, a live emotion chart per track, the tracks that ended, and the pipeline's health,
plus ``/metrics``.

Every asset is served by the app itself (no CDN), from the package's ``static/`` folder;
the charts are drawn by uPlot, vendored in ``static/vendor/`` (see its README there). The
script builds every element with textContent (names coming from cameras never become HTML).
What the page shows comes from ``DashboardState`` (``state.py``).

Video is one MJPEG stream per camera (``/api/stream/<camera>``, ``multipart/x-mixed-replace``):
the browser shows it in a plain ``<img>``, and the app sends each new annotated frame once,
at a bounded rate, instead of being asked for a JPEG five times a second.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations (Request,
# imported inside create_app with the extra) as objects, not names to look up in this module.
import asyncio
import hmac
import math
import threading
import time
from importlib import resources

import redis

from fer_pipeline.dashboard.state import DashboardState
from fer_pipeline.settings import Settings
from fer_pipeline.transport import Transport

# The page's files: served from memory, read once at startup (a fixed list, so no path from a
# request ever reaches the file system).
ASSETS = {
    "app.js": "text/javascript", "app.css": "text/css",
    "vendor/uPlot.iife.min.js": "text/javascript", "vendor/uPlot.min.css": "text/css",
}
BOUNDARY = "fer-frame"
STREAM_FPS = 15.0  # default frames per second of a video stream
MAX_STREAM_FPS = 30.0
# A quiet camera's stream repeats its frame this often: the connection stays visibly alive
# through proxies, and a client that left is noticed by the failed send.
STREAM_KEEPALIVE_S = 5.0


def _asset(name: str) -> str:
    return resources.files("fer_pipeline.dashboard").joinpath("static", *name.split("/")).read_text(encoding="utf-8")


def emotion_colours() -> dict[str, str]:
    """The video's box colours (BGR, from the overlay) as CSS colours: the charts match the boxes."""
    from fer_pipeline.consumers.overlay import DEFAULT_COLORS

    return {e: "#{2:02x}{1:02x}{0:02x}".format(*bgr) for e, bgr in DEFAULT_COLORS.items()}


def stream_period(fps: float) -> float:
    """Seconds between a video stream's frames for the ``fps`` asked, clamped to 0.5..30.
    NaN (``?fps=nan`` parses as a float) compares false with everything, so it would pass
    the clamp and reach asyncio.sleep: it gets the default rate."""
    if math.isnan(fps):
        fps = STREAM_FPS
    return 1.0 / min(max(fps, 0.5), MAX_STREAM_FPS)


def _part(jpeg: bytes) -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
    return head + jpeg + b"\r\n"


def create_app(settings: Settings, transport: Transport):
    """The FastAPI app: ``/`` (the page), ``/static/*``, ``/api/*`` (JSON, JPEG and MJPEG), ``/metrics``."""
    from fastapi import FastAPI, HTTPException, Request, Response
    from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
    from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest
    from starlette.concurrency import run_in_threadpool

    from fer_pipeline.labels import EMOTIONS
    from fer_pipeline.metrics import registry_for

    index_html = _asset("index.html")
    assets = {name: (_asset(name), media) for name, media in ASSETS.items()}
    colours = emotion_colours()
    registry, latency = registry_for(transport)
    streams_open = Gauge("fer_dashboard_streams", "Video streams the dashboard is sending now.", registry=registry)
    state = DashboardState(settings, transport, latency)
    app = FastAPI(title="fer-pipeline dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.dashboard = state
    app.state.closing = threading.Event()  # set by serve.Server as it shuts down: the video streams end
    no_cache = {"Cache-Control": "no-store"}
    token = settings.dashboard.token.get_secret_value() if settings.dashboard.token is not None else None

    @app.middleware("http")
    async def _authorized(request, call_next):
        # People's faces and emotions: /api/* (the video streams too) and /metrics need the token
        # when one is set. The page, its script and style, and /healthz (the container's health
        # check) are public. An <img> cannot send a header: the page puts the token in the URL.
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

    @app.get("/static/{name:path}")
    def static(name: str) -> Response:
        if name not in assets:
            raise HTTPException(404, "no such file")
        text, media = assets[name]
        return Response(text, media_type=media, headers={"Cache-Control": "no-cache"})

    @app.get("/api/cameras")
    def cameras() -> dict:
        return {"cameras": state.camera_ids(), "emotions": list(EMOTIONS), "colours": colours}

    @app.get("/api/status")
    def status() -> dict:
        return state.status()

    @app.get("/api/frame/{camera_id}")
    def frame(camera_id: str) -> Response:
        got = state.frame(camera_id)
        if got is None:
            raise HTTPException(404, f"no frames from camera {camera_id!r}")
        jpeg, index, faces, stale = got
        return Response(jpeg, media_type="image/jpeg",
                        headers={**no_cache, "X-Frame-Index": str(index), "X-Faces": str(faces),
                                 "X-Faces-Carried-Over": str(stale)})

    @app.get("/api/stream/{camera_id}")
    async def stream(camera_id: str, request: Request, fps: float = STREAM_FPS) -> Response:
        period = stream_period(fps)
        first = await run_in_threadpool(state.frame_entry, camera_id)  # Redis down: a 503, as for any API
        if first is None:
            raise HTTPException(404, f"no frames from camera {camera_id!r}")

        async def parts():
            streams_open.inc()
            try:
                got, sent, sent_at = first, None, 0.0
                while True:
                    if got is not None and (got[0] != sent or time.monotonic() - sent_at > STREAM_KEEPALIVE_S):
                        sent, sent_at = got[0], time.monotonic()
                        yield _part(got[1])
                    await asyncio.sleep(period)
                    if app.state.closing.is_set():
                        return  # the server is shutting down
                    if await request.is_disconnected():
                        return  # the tab closed or the page reconnected: stop reading for it
                    try:
                        got = await run_in_threadpool(state.frame_entry, camera_id)
                    except redis.RedisError:
                        got = None  # the page shows Redis is down; the stream waits for it
                        await asyncio.sleep(1.0)
            finally:
                streams_open.dec()

        return StreamingResponse(parts(), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                                 headers=no_cache)

    @app.get("/api/tracks/{camera_id}")
    def tracks(camera_id: str, seconds: float = 60.0) -> dict:
        return {"camera": camera_id, **state.tracks(camera_id, min(max(seconds, 1.0), 600.0))}

    @app.get("/metrics")
    def metrics() -> Response:
        state.poll()  # observe the latest labels' latencies before exporting
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz() -> dict:
        transport.ping()
        return {"ok": True}

    return app
