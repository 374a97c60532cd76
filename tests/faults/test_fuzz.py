"""Schema-valid extreme values of every field of every message type, driven through the real
consumers: the logger into SQLite (rows and label blocks) and PostgreSQL, the report over
what was logged, the display into video files, and the dashboard. Whatever the values, no
consumer crashes and each message is logged, drawn or dead-lettered exactly once."""

from __future__ import annotations

import os
import sqlite3
import tempfile
import uuid
from contextlib import closing
from pathlib import Path

import cv2
import fakeredis
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fer_pipeline.analytics.episodes import build_report
from fer_pipeline.analytics.options import ReportOptions
from fer_pipeline.consumers.display import DisplayService
from fer_pipeline.consumers.label_logger import LabelLoggerService
from fer_pipeline.emotion_log.sqlite import SqliteStore
from fer_pipeline.labels import EMOTIONS
from fer_pipeline.messages import MAX_COUNT, MAX_FACES, MAX_FPS, MAX_SIDE, MAX_TIME, BBox, Frame, Label
from fer_pipeline.streams import StreamKeys
from fer_pipeline.transport import Transport
from tests.conftest import make_settings, pg_schema
from tests.logs import drive

FUZZ = settings(max_examples=int(os.environ.get("FER_FUZZ_EXAMPLES", "25")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

times = st.floats(min_value=0.0, max_value=MAX_TIME, exclude_max=True, allow_nan=False)
counts = st.integers(0, MAX_COUNT - 1)
# Any text the schema accepts: it refuses NUL (PostgreSQL text cannot hold it) and lone surrogates.
names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=64)
boxes = st.builds(BBox, x=st.integers(0, MAX_SIDE - 1), y=st.integers(0, MAX_SIDE - 1),
                  w=st.integers(1, MAX_SIDE), h=st.integers(1, MAX_SIDE))


@st.composite
def probabilities(draw) -> tuple[float, ...]:
    raw = draw(st.lists(st.floats(0.0, 1.0), min_size=len(EMOTIONS), max_size=len(EMOTIONS)))
    p = np.asarray(raw) + 1e-9
    return tuple(float(v) for v in p / p.sum())


@st.composite
def labels(draw, i: int, batch: str = "b") -> Label:
    p = draw(probabilities())
    best = int(np.argmax(p))
    return Label(crop_id=f"fuzz/{batch}/{i}", camera_id=draw(names), run_id=draw(names), frame_index=draw(counts),
                 face_index=draw(st.integers(0, MAX_FACES - 1)), faces_in_frame=draw(st.integers(1, MAX_FACES)),
                 track_id=draw(counts), bbox=draw(boxes), emotion=EMOTIONS[best], confidence=p[best],
                 probabilities=p, model_id=draw(names), worker_id=draw(names), captured_at=draw(times),
                 published_at=draw(times), inferred_at=draw(times), labelled_at=draw(times),
                 truth=draw(st.none() | st.sampled_from(EMOTIONS)), position_s=draw(st.none() | times))


@st.composite
def label_batches(draw) -> list[Label]:
    n = draw(st.integers(1, 12))
    return [draw(labels(i)) for i in range(n)]


def _transport(tmp: Path, **sections) -> Transport:
    s = make_settings(tmp, **sections)
    return Transport(fakeredis.FakeRedis(), StreamKeys(s.redis.prefix), s)


def _log(transport: Transport, batch: list[Label]) -> LabelLoggerService:
    transport.publish(transport.keys.labels, [lab.encode() for lab in batch], 10_000)
    service = LabelLoggerService(transport.settings, transport, ident="fuzz")
    drive(service)
    return service


@FUZZ
@given(batch=label_batches())
def test_any_valid_label_is_logged_once_and_reported(batch):
    with tempfile.TemporaryDirectory() as tmp:
        t = _transport(Path(tmp))
        service = _log(t, batch)
        service.finish()
        c = service.counters
        assert c["labels_logged"] + c["dead_letters"] == len(batch) and c["dead_letters"] == 0
        with SqliteStore(t.settings.consumer.db) as store:
            assert store.count() == len(batch)
            assert sum(s.labels for s in store.summary()) == len(batch)
        with closing(sqlite3.connect(t.settings.consumer.db)) as db:
            stored = dict(db.execute("SELECT crop_id, position_s FROM labels").fetchall())
        assert stored == {lab.crop_id: lab.position_s for lab in batch}  # None stays NULL, values exact
        for blocks in (True, False):
            report = build_report(t.settings.consumer.db, ReportOptions(blocks=blocks))
            assert report.labels_read == len(batch)


@pytest.fixture(scope="module")
def pg_url():
    with pg_schema("fer_fuzz") as url:  # one schema for every example (crop ids made unique)
        yield url


@FUZZ
@given(batch=label_batches())
def test_any_valid_label_is_logged_once_in_postgresql(pg_url, batch):
    from fer_pipeline.emotion_log.postgres import PostgresStore

    # One schema serves every example: crop ids made unique per example, not per batch.
    example = uuid.uuid4().hex
    batch = [lab.model_copy(update={"crop_id": f"{example}/{i}"}) for i, lab in enumerate(batch)]
    with tempfile.TemporaryDirectory() as tmp, PostgresStore(pg_url) as store:
        before = store.count()
        t = _transport(Path(tmp))
        t.publish(t.keys.labels, [lab.encode() for lab in batch], 10_000)
        service = LabelLoggerService(t.settings, t, ident="fuzz", store=store)
        drive(service)
        assert service.counters["dead_letters"] == 0
        assert store.count() - before == len(batch) == service.counters["labels_logged"]
        assert sum(s.labels for s in store.summary() if s.camera_id in {lab.camera_id for lab in batch}) >= len(batch)


@st.composite
def frames(draw, i: int, base: int) -> Frame:
    w, h = draw(st.integers(1, 64)), draw(st.integers(1, 64))
    image = np.full((h, w, 3), draw(st.integers(0, 255)), np.uint8)
    ok, jpeg = cv2.imencode(".jpg", image)
    assert ok
    return Frame(camera_id="cam", run_id=draw(names), frame_index=base + i,
                 captured_at=draw(times), faces=draw(st.integers(0, MAX_FACES)),
                 scale=draw(st.floats(1e-6, 1.0)), fps=draw(st.floats(0.0, MAX_FPS)), jpeg=jpeg.tobytes())


@st.composite
def scenes(draw) -> tuple[list[Frame], list[Label]]:
    n = draw(st.integers(1, 6))
    base = draw(st.integers(0, MAX_COUNT - 1 - n))
    fs = [draw(frames(i, base)) for i in range(n)]
    labs = []
    for f in fs:
        for k in range(min(f.faces, draw(st.integers(0, 3)))):
            lab = draw(labels(len(labs)))
            labs.append(lab.model_copy(update={"camera_id": f.camera_id, "run_id": f.run_id,
                                               "frame_index": f.frame_index, "face_index": k}))
    return fs, labs


@FUZZ
@given(scene=scenes())
def test_any_valid_frame_is_drawn_or_dead_lettered_once(scene):
    fs, labs = scene
    with tempfile.TemporaryDirectory() as tmp:
        t = _transport(Path(tmp), consumer={"label_wait_ms": 0, "out_dir": str(Path(tmp) / "out")})
        t.publish(t.keys.labels, [lab.encode() for lab in labs], 10_000)
        t.publish(t.keys.frames("cam"), [f.encode() for f in fs], 10_000)
        t.add_cameras(["cam"])
        service = DisplayService(t.settings, t, ident="fuzz")
        service.setup()
        for _ in range(4):
            service.step()
        service.finish()
        c = service.counters
        assert c["frames_drawn"] + c["dead_letters"] == len(fs)


@FUZZ
@given(scene=scenes())
def test_the_dashboard_shows_any_valid_frame_and_label(scene):
    from fer_pipeline.dashboard.state import DashboardState

    fs, labs = scene
    with tempfile.TemporaryDirectory() as tmp:
        t = _transport(Path(tmp))
        t.publish(t.keys.labels, [lab.encode() for lab in labs], 10_000)
        t.publish(t.keys.frames("cam"), [f.encode() for f in fs], 10_000)
        t.add_cameras(["cam"])
        state = DashboardState(t.settings, t)
        got = state.frame("cam")
        assert got is not None and got[0][:2] == b"\xff\xd8"  # a JPEG, drawn or as sent
        for camera in {lab.camera_id for lab in labs}:
            state.tracks(camera)
        assert state.status()["labels_per_s"] >= 0
