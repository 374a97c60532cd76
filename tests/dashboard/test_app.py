"""The live dashboard against the real Redis: its API, /metrics, and the page in a real
headless Chromium (frames update, the charts fill; a screenshot is saved)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.factories import make_frame, make_label

pytest.importorskip("fastapi", reason="the dashboard extra is not installed")
pytest.importorskip("uvicorn", reason="the dashboard extra is not installed")
pytestmark = pytest.mark.redis

from fastapi.testclient import TestClient  # noqa: E402

from fer_pipeline import health
from fer_pipeline.dashboard.app import create_app  # noqa: E402
from fer_pipeline.streams import LOGGER_GROUP  # noqa: E402

ARTIFACTS = Path(os.environ.get("FER_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "out" / "test-artifacts"))
EMOTIONS = ("happy", "sad", "surprise", "neutral")


def publish(t, frame_index: int, *, camera: str = "door", tracks: int = 2) -> None:
    """One frame of a camera and the labels of its faces, as producers and workers would."""
    t._client.sadd(t.keys.cameras, camera)
    t.publish(t.keys.frames(camera), [make_frame(camera_id=camera, frame_index=frame_index, faces=tracks).encode()],
              maxlen=50)
    labels = [make_label(camera_id=camera, frame_index=frame_index, face_index=k, faces_in_frame=tracks, track_id=k,
                         emotion=EMOTIONS[(frame_index // 20 + k) % len(EMOTIONS)], captured_at=time.time(),
                         confidence=0.6 + 0.1 * k).encode() for k in range(tracks)]
    t.publish(t.keys.labels, labels, maxlen=5000)


def test_api_frames_tracks_status_and_metrics(redis_settings, real_transport):
    t = real_transport
    t.ensure_group(t.keys.labels, LOGGER_GROUP)
    for i in range(5):
        publish(t, i)
    health.beat(t, "worker", "w1", 5.0, {"role": "worker", "crops_labelled": 40, "batches": 8, "infer_ms": 1500.0})
    client = TestClient(create_app(redis_settings, t))

    assert client.get("/api/cameras").json()["cameras"] == ["door"]
    r = client.get("/api/frame/door")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content[:2] == b"\xff\xd8"
    assert r.headers["x-frame-index"] == "4" and r.headers["x-faces"] == "2"
    assert client.get("/api/frame/nobody").status_code == 404

    tracks = client.get("/api/tracks/door").json()["tracks"]
    assert set(tracks) == {"0", "1"} and len(tracks["0"]) == 5
    t_, emotion, conf = tracks["1"][-1]
    assert emotion == 5 and conf == pytest.approx(0.7)  # EMOTIONS index of "sad"

    st = client.get("/api/status").json()
    assert st["streams"]["labels"] == 10 and st["alive"] == {"worker": 1}
    # Lag counts entries: 5 frames' labels, published as 5 bundles.
    assert {(g["stream"], g["group"], g["lag"]) for g in st["groups"]} == {("labels", "logger", 5)}

    text = client.get("/metrics").text
    assert 'fer_processes_alive{role="worker"} 1.0' in text
    assert 'fer_group_lag{group="logger",stream="labels"} 5.0' in text
    assert 'fer_crops_labelled_total{ident="w1",role="worker"} 40.0' in text
    assert 'fer_worker_mean_batch_size{ident="w1"} 5.0' in text
    assert 'fer_worker_inference_seconds_total{ident="w1"} 1.5' in text
    assert 'fer_label_latency_seconds_count{camera="door"} 10.0' in text
    assert 'fer_published_total{stream="labels"} 10.0' in text

    page = client.get("/").text
    assert "/static/app.js" in page and "http" not in page.replace("http-equiv", "")  # nothing from elsewhere
    js, css = client.get("/static/app.js"), client.get("/static/app.css")
    assert js.headers["content-type"].startswith("text/javascript") and "//" not in css.text
    assert not re.search(r"https?://|import\s*\(|src=", js.text)  # no script or asset from elsewhere
    assert client.get("/healthz").json() == {"ok": True}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_page_in_headless_chromium(redis_settings, real_transport):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if not chromium or not driver_bin:
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    import uvicorn

    t = real_transport
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(redis_settings, t), host="127.0.0.1", port=port,
                                          log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    stop = threading.Event()

    def camera():  # a live camera at ~10 fps
        i = 0
        while not stop.is_set():
            publish(t, i, camera="door")
            i += 1
            stop.wait(0.1)

    feeder = threading.Thread(target=camera, daemon=True)
    feeder.start()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"):
        opts.add_argument(a)
    from selenium.webdriver.chrome.service import Service

    browser = webdriver.Chrome(service=Service(driver_bin), options=opts)
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        browser.get(f"http://127.0.0.1:{port}/")

        def wait_for(script: str, what: str, timeout: float = 20.0):
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                value = browser.execute_script(script)
                if value:
                    return value
                time.sleep(0.2)
            raise AssertionError(f"timed out waiting for {what}")

        first = int(wait_for("return document.querySelector('.camera')?.dataset.frameIndex", "a first frame"))
        wait_for(f"return Number(document.querySelector('.camera')?.dataset.frameIndex) > {first} + 3",
                 "the video to update")
        assert browser.execute_script("const i = document.querySelector('.camera img');"
                                      "return i.complete && i.naturalWidth") > 0
        wait_for("return document.querySelectorAll('canvas[data-points]').length >= 2", "a chart per track")
        points = wait_for("const n = [...document.querySelectorAll('canvas[data-points]')]"
                          ".map(c => Number(c.dataset.points)); return Math.min(...n) >= 10 && n", "charts to fill")
        assert len(points) == 2
        wait_for("return document.body.dataset.status === 'ok' && "
                 "document.querySelectorAll('#groups tbody tr, #health tbody tr').length >= 5", "the health panel")
        assert "door" in browser.find_element("css selector", ".camera h2").text
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "dashboard.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
        assert errors == [], errors
    finally:
        stop.set()
        browser.quit()
        server.should_exit = True
        feeder.join(timeout=5)


def test_a_new_producer_run_starts_new_charts(redis_settings, real_transport):
    t = real_transport
    publish(t, 0)
    client = TestClient(create_app(redis_settings, t))
    assert set(client.get("/api/tracks/door").json()["tracks"]) == {"0", "1"}
    label = make_label(camera_id="door", run_id="r2", frame_index=0, track_id=0, captured_at=time.time() + 1)
    t.publish(t.keys.labels, [label.encode()], maxlen=5000)
    time.sleep(0.15)  # past the poll interval
    tracks = client.get("/api/tracks/door").json()["tracks"]
    assert set(tracks) == {"0"} and len(tracks["0"]) == 1


def test_a_token_guards_the_api_and_metrics_but_not_the_page(settings, fake_transport):
    s = settings.with_updates(dashboard={"token": "s3cret-token"})
    client = TestClient(create_app(s, fake_transport))
    for path in ("/api/cameras", "/api/status", "/metrics"):
        assert client.get(path).status_code == 401
        assert client.get(path, params={"token": "wrong"}).status_code == 401
        assert client.get(path, params={"token": "s3cret-token"}).status_code == 200
        assert client.get(path, headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    for path in ("/", "/static/app.js", "/healthz"):
        assert client.get(path).status_code == 200
    assert "s3cret-token" not in s.model_dump_json()  # never in a dump or a log line


def test_a_frame_declaring_a_huge_image_is_never_decoded(settings, fake_transport):
    import struct

    sof = struct.pack(">BHHB", 8, 30_000, 30_000, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    bomb = b"\xff\xd8\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\x00" * 600
    good = make_frame(frame_index=1, faces=0)
    t = fake_transport
    t.publish(t.keys.frames("cam0"), [good.encode(), good.model_copy(update={"jpeg": bomb, "frame_index": 2}).encode()],
              300)
    t.add_cameras(["cam0"])
    r = TestClient(create_app(settings, t)).get("/api/frame/cam0")
    assert r.status_code == 200 and r.headers["X-Frame-Index"] == "1"  # the newest decodable one


def test_listening_beyond_loopback_always_needs_a_token(settings):
    from fer_pipeline.cli.ops import dashboard_settings

    local, where = dashboard_settings(settings)
    assert local.dashboard.token is None and where == "http://127.0.0.1:8000/"
    wide, where = dashboard_settings(settings.with_updates(dashboard={"host": "0.0.0.0"}))
    token = wide.dashboard.token.get_secret_value()
    assert len(token) >= 20 and where == f"http://0.0.0.0:8000/?token={token}"  # made up, and printed
    fixed, where = dashboard_settings(settings.with_updates(dashboard={"host": "0.0.0.0", "token": "mine"}))
    assert fixed.dashboard.token.get_secret_value() == "mine" and "mine" not in where
