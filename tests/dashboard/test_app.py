"""The live dashboard's API against the real Redis: frames, the MJPEG video stream, the charts'
tracks and the ended ones, liveness, status, /metrics and the token. The page itself runs in
a real Chromium in test_page.py."""

from __future__ import annotations

import fnmatch
import re
import time

import pytest
import tomllib

from fer_pipeline.messages import EndOfStream
from tests.conftest import REPO
from tests.factories import make_frame, make_label

pytest.importorskip("fastapi", reason="the dashboard extra is not installed")
pytest.importorskip("uvicorn", reason="the dashboard extra is not installed")
pytestmark = pytest.mark.redis

import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from fer_pipeline import health  # noqa: E402
from fer_pipeline.dashboard import state as dashboard_state  # noqa: E402
from fer_pipeline.dashboard.app import ASSETS, BOUNDARY, MAX_STREAM_FPS, STREAM_FPS, create_app, stream_period  # noqa: E402
from fer_pipeline.labels import EMOTIONS  # noqa: E402
from fer_pipeline.streams import LOGGER_GROUP  # noqa: E402
from tests.dashboard.live import Camera, Server, publish  # noqa: E402


def label_at(t, track: int, captured_at: float, *, frame_index: int = 0, emotion: str = "happy", run: str = "r1"):
    label = make_label(camera_id="door", run_id=run, frame_index=frame_index, track_id=track, emotion=emotion,
                       captured_at=captured_at)
    t.publish(t.keys.labels, [label.encode()], maxlen=5000)


def test_api_frames_tracks_status_and_metrics(redis_settings, real_transport):
    t = real_transport
    t.ensure_group(t.keys.labels, LOGGER_GROUP)
    for i in range(5):
        publish(t, i)
    health.beat(t, "worker", "w1", 5.0, {"role": "worker", "crops_labelled": 40, "batches": 8, "infer_ms": 1500.0})
    client = TestClient(create_app(redis_settings, t))

    cams = client.get("/api/cameras").json()
    assert cams["cameras"] == ["door"] and cams["emotions"] == list(EMOTIONS)
    assert cams["colours"]["happy"] == "#ffd700"  # the overlay's BGR (0, 215, 255): charts match the boxes
    r = client.get("/api/frame/door")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content[:2] == b"\xff\xd8"
    assert (r.headers["x-frame-index"], r.headers["x-faces"], r.headers["x-faces-carried-over"]) == ("4", "2", "0")
    assert client.get("/api/frame/nobody").status_code == 404

    d = client.get("/api/tracks/door").json()
    assert [tr["track"] for tr in d["tracks"]] == [0, 1] and d["ended"] == []
    tr = d["tracks"][1]
    assert len(tr["t"]) == 5 and len(tr["p"]) == len(EMOTIONS) and all(len(col) == 5 for col in tr["p"])
    assert tr["t"] == sorted(tr["t"]) and d["now"] == pytest.approx(tr["t"][-1], abs=1e-3)
    assert tr["emotion"] == "sad" and tr["confidence"] == pytest.approx(0.65)
    assert tr["p"][EMOTIONS.index("sad")][-1] == pytest.approx(0.65)  # one column per emotion

    st = client.get("/api/status").json()
    assert st["streams"]["labels"] == 10 and st["alive"] == {"worker": 1}
    # Lag counts entries: 5 frames' labels, published as 5 bundles.
    assert {(g["stream"], g["group"], g["lag"]) for g in st["groups"]} == {("labels", "logger", 5)}
    door = st["cameras"]["door"]
    assert st["live"] and door["live"] and not door["ended"] and door["frame_index"] == 4 and door["faces"] == 2
    assert 0 <= door["frame_age_s"] < 5 and 0 <= door["label_age_s"] < 5

    text = client.get("/metrics").text
    assert 'fer_processes_alive{role="worker"} 1.0' in text
    assert 'fer_group_lag{group="logger",stream="labels"} 5.0' in text
    assert 'fer_crops_labelled_total{ident="w1",role="worker"} 40.0' in text
    assert 'fer_worker_mean_batch_size{ident="w1"} 5.0' in text
    assert 'fer_worker_inference_seconds_total{ident="w1"} 1.5' in text
    assert 'fer_label_latency_seconds_count{camera="door"} 10.0' in text
    assert 'fer_published_total{stream="labels"} 10.0' in text
    assert "fer_dashboard_streams 0.0" in text

    page = client.get("/").text
    assert "/static/app.js" in page and "/static/vendor/uPlot.iife.min.js" in page
    assert "http" not in page.replace("http-equiv", "")  # nothing from elsewhere
    for name, media in ASSETS.items():
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(media) and len(r.text) > 1000
    assert "uPlot" in client.get("/static/vendor/uPlot.iife.min.js").text
    js, css = client.get("/static/app.js").text, client.get("/static/app.css").text
    assert "//" not in css
    assert not re.search(r"https?://|import\s*\(", js)  # no script or asset from elsewhere
    assert client.get("/static/../app.py").status_code == 404 and client.get("/static/index.html").status_code == 404
    assert client.get("/healthz").json() == {"ok": True}


def test_the_package_ships_every_asset_the_app_serves():
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = patterns["fer_pipeline.dashboard"]
    for name in [*ASSETS, "index.html", "vendor/uPlot.LICENSE"]:
        assert (REPO / "dashboard" / "static" / name).is_file()
        # fnmatch's * crosses "/", setuptools' does not: compare folder by folder.
        assert any(fnmatch.fnmatch(f"static/{name}", p) and p.count("/") == name.count("/") + 1 for p in shipped), name


def test_a_track_without_labels_for_a_while_ends(redis_settings, real_transport):
    t = real_transport
    client = TestClient(create_app(redis_settings, t))
    t0 = time.time() - 60
    for i in range(10):  # two people for a second
        label_at(t, 0, t0 + i / 10, frame_index=i)
        label_at(t, 1, t0 + i / 10, frame_index=i, emotion="sad")
    for i in range(10, 40):  # then one: track 1 left 3 s ago (camera clock)
        label_at(t, 0, t0 + i / 10, frame_index=i)
    d = client.get("/api/tracks/door").json()
    assert [tr["track"] for tr in d["tracks"]] == [0, 1]
    assert dashboard_state.TRACK_END_S > 3.0
    time.sleep(dashboard_state.POLL_EVERY_S)
    for i in range(40, 80):  # 7 s after track 1's last label: it ended
        label_at(t, 0, t0 + i / 10, frame_index=i)
    d = client.get("/api/tracks/door").json()
    assert [tr["track"] for tr in d["tracks"]] == [0]
    (ended,) = d["ended"]
    assert ended == {"track": 1, "started": pytest.approx(t0), "ended": pytest.approx(t0 + 0.9), "labels": 10,
                     "emotion": "sad", "share": 1.0}


def test_a_looping_clip_keeps_a_bounded_page(redis_settings, real_transport, monkeypatch):
    # Every lap the tracker gives the same person a new id: the charts are the live tracks only,
    # the ended list keeps the newest, and no old series stays in memory.
    t = real_transport
    app = create_app(redis_settings, t)
    client = TestClient(app)
    t0 = time.time() - 600
    for lap in range(30):
        for i in range(10):
            label_at(t, lap, t0 + lap * 10 + i / 10, frame_index=lap * 10 + i)
        time.sleep(dashboard_state.POLL_EVERY_S)
        client.get("/api/tracks/door")
    d = client.get("/api/tracks/door").json()
    assert [tr["track"] for tr in d["tracks"]] == [29]
    assert [e["track"] for e in d["ended"]] == list(range(28, 28 - dashboard_state.ENDED_KEPT, -1))
    assert list(app.state.dashboard.cameras["door"].tracks) == [29]


def test_a_new_producer_run_starts_new_charts(redis_settings, real_transport):
    t = real_transport
    publish(t, 0)
    client = TestClient(create_app(redis_settings, t))
    assert [tr["track"] for tr in client.get("/api/tracks/door").json()["tracks"]] == [0, 1]
    label_at(t, 0, time.time() + 1, run="r2")
    time.sleep(dashboard_state.POLL_EVERY_S)
    d = client.get("/api/tracks/door").json()
    assert [tr["track"] for tr in d["tracks"]] == [0] and len(d["tracks"][0]["t"]) == 1
    assert sorted(e["track"] for e in d["ended"]) == [0, 1]  # the old run's people


def test_the_frame_shown_waits_for_its_labels(redis_settings, real_transport):
    # Labels come after their frame: the newest frame is shown once its labels are in, or once it
    # waited label_wait_ms; only then are its faces drawn with the previous label, marked ~.
    s = redis_settings.with_updates(consumer={"label_wait_ms": 300})
    t = real_transport
    publish(t, 0)
    client = TestClient(create_app(s, t))
    assert client.get("/api/frame/door").headers["x-frame-index"] == "0"
    t.publish(t.keys.frames("door"), [make_frame(camera_id="door", frame_index=1, faces=2).encode()], maxlen=50)
    r = client.get("/api/frame/door")
    assert r.headers["x-frame-index"] == "0"  # frame 1's labels are not in yet
    time.sleep(0.35)
    r = client.get("/api/frame/door")
    assert (r.headers["x-frame-index"], r.headers["x-faces"], r.headers["x-faces-carried-over"]) == ("1", "2", "2")
    publish(t, 2)  # frame and labels together
    time.sleep(dashboard_state.POLL_EVERY_S)
    r = client.get("/api/frame/door")
    assert (r.headers["x-frame-index"], r.headers["x-faces-carried-over"]) == ("2", "0")


def test_liveness_follows_the_streams(redis_settings, real_transport, monkeypatch):
    monkeypatch.setattr(dashboard_state, "STALE_AFTER_S", 0.5)
    t = real_transport
    client = TestClient(create_app(redis_settings, t))
    assert client.get("/api/status").json()["cameras"] == {}
    publish(t, 0)
    st = client.get("/api/status").json()
    assert st["live"] and st["cameras"]["door"]["live"] and st["stale_after_s"] == 0.5
    time.sleep(0.7)  # nothing new: stopped
    st = client.get("/api/status").json()
    assert not st["live"] and st["cameras"]["door"]["frame_age_s"] >= 0.5 and not st["cameras"]["door"]["ended"]
    publish(t, 1)  # back
    time.sleep(dashboard_state.POLL_EVERY_S)  # labels are read at most this often
    assert client.get("/api/status").json()["live"]
    end = EndOfStream(camera_id="door", run_id="r1", frames=2, crops=4, ended_at=time.time())
    t.publish(t.keys.frames("door"), [end.encode()], maxlen=50)
    door = client.get("/api/status").json()["cameras"]["door"]
    assert door["ended"] and not door["live"] and door["frame_index"] == 1  # the last frame is still shown


def parts(chunks, n: int) -> list[bytes]:
    """The first ``n`` JPEGs of a multipart/x-mixed-replace body (an iterator of its bytes; the
    caller keeps it, so the response stays open), checking each part's headers."""
    buf, out = b"", []
    for chunk in chunks:
        buf += chunk
        while True:
            m = re.match(rb"--" + BOUNDARY.encode() + rb"\r\nContent-Type: image/jpeg\r\nContent-Length: (\d+)\r\n\r\n",
                         buf)
            if m is None or len(buf) < m.end() + int(m[1]) + 2:
                assert m is not None or len(buf) < 200, buf[:200]
                break
            jpeg = buf[m.end():m.end() + int(m[1])]
            assert buf[m.end() + int(m[1]):m.end() + int(m[1]) + 2] == b"\r\n"
            out.append(jpeg)
            buf = buf[m.end() + int(m[1]) + 2:]
            if len(out) == n:
                return out
    raise AssertionError(f"the stream ended after {len(out)} parts")


def streams_open(url: str, token: str) -> float:
    text = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {token}"}).text
    return float(re.search(r"^fer_dashboard_streams (\S+)$", text, re.M)[1])


@pytest.mark.slow
def test_the_video_stream_is_mjpeg_behind_the_token(redis_settings, real_transport):
    s = redis_settings.with_updates(dashboard={"token": "s3cret-token"})
    with Server(s, real_transport) as server, Camera(real_transport, fps=20):
        url = f"{server.url}/api/stream/door"
        deadline = time.monotonic() + 10
        while httpx.get(f"{server.url}/api/frame/door", params={"token": "s3cret-token"}).status_code == 404:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, params={"token": "wrong"}).status_code == 401
        assert httpx.get(f"{server.url}/api/stream/nobody", params={"token": "s3cret-token"}).status_code == 404

        started = time.monotonic()
        with httpx.stream("GET", url, params={"token": "s3cret-token", "fps": 5}, timeout=10) as r:
            assert r.status_code == 200
            assert r.headers["content-type"] == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
            assert r.headers["cache-control"] == "no-store"
            chunks = r.iter_bytes()
            jpegs = parts(chunks, 4)
            elapsed = time.monotonic() - started
            assert streams_open(server.url, "s3cret-token") == 1
        assert all(j[:2] == b"\xff\xd8" and j[-2:] == b"\xff\xd9" for j in jpegs)
        assert len(set(jpegs)) == 4  # each part a new frame
        assert elapsed >= 3 / 5 * 0.9  # at most the asked frame rate, though the camera runs at 20 fps
        with httpx.stream("GET", url, headers={"Authorization": "Bearer s3cret-token"}, timeout=10) as r:
            assert len(parts(r.iter_bytes(), 2)) == 2
        # A rate that is not a number streams at the default rate (it once reached sleep(nan)).
        with httpx.stream("GET", url, params={"token": "s3cret-token", "fps": "nan"}, timeout=10) as r:
            assert r.status_code == 200
            assert len(parts(r.iter_bytes(), 2)) == 2
        # The client left: the stream stops reading frames for it.
        deadline = time.monotonic() + 5
        while streams_open(server.url, "s3cret-token") != 0:
            assert time.monotonic() < deadline, "the stream outlived its client"
            time.sleep(0.1)


def test_the_stream_rate_is_clamped_and_not_a_number_is_the_default():
    assert stream_period(float("nan")) == 1 / STREAM_FPS
    assert stream_period(float("inf")) == 1 / MAX_STREAM_FPS
    assert stream_period(float("-inf")) == stream_period(0.0) == 2.0
    assert stream_period(10.0) == 0.1


def test_a_token_guards_the_api_and_metrics_but_not_the_page(settings, fake_transport):
    s = settings.with_updates(dashboard={"token": "s3cret-token"})
    client = TestClient(create_app(s, fake_transport))
    for path in ("/api/cameras", "/api/status", "/metrics", "/api/stream/door", "/api/frame/door"):
        assert client.get(path).status_code == 401
        assert client.get(path, params={"token": "wrong"}).status_code == 401
    for path in ("/api/cameras", "/api/status", "/metrics"):
        assert client.get(path, params={"token": "s3cret-token"}).status_code == 200
        assert client.get(path, headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    for path in ("/", "/static/app.js", "/static/vendor/uPlot.iife.min.js", "/healthz"):
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
