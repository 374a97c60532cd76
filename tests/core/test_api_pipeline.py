"""Pipeline: the demo clip through real producer and worker processes, labels to a callback."""

from __future__ import annotations

import threading
import time
import uuid

import cv2
import numpy as np
import pytest

from fer_pipeline.analyzer import Analyzer
from fer_pipeline.errors import ConfigError, SourceError
from fer_pipeline.local_pipeline import Pipeline, PipelineError
from fer_pipeline.messages import Label
from fer_pipeline.settings import Settings, shipped_path
from fer_pipeline.transport import Transport

pytestmark = pytest.mark.slow

CLIP = shipped_path("demo") / "short_hamilton_clip.mp4"


def first_frame() -> np.ndarray:
    cap = cv2.VideoCapture(str(CLIP))
    ok, frame = cap.read()
    cap.release()
    assert ok
    return frame


def test_run_delivers_the_demo_clips_labels_and_returns(tmp_path):
    got: list[Label] = []
    threads = set()

    def on_label(label: Label) -> None:
        threads.add(threading.get_ident())
        got.append(label)

    pipeline = Pipeline("demo", on_label, realtime=False, log_dir=tmp_path / "logs", settings=Settings(_env_file=None))
    delivered = pipeline.run()
    assert delivered == len(got) > 100
    assert len(threads) == 1 and threading.get_ident() not in threads  # one thread, not the caller's
    assert {lab.camera_id for lab in got} == {"short_hamilton_clip"}
    assert len({lab.crop_id for lab in got}) == len(got)  # each face once
    frames = {lab.frame_index for lab in got}
    assert len(frames) > 200  # the clip has 275 frames, nearly all with a face
    # Every process is gone, and the embedded broker with them.
    assert all(c.returncode == 0 for c in pipeline._sup.children)
    assert pipeline._broker.process.poll() is not None
    # The first frame of a camera is detected as a still image is: analyze() agrees with the pipeline.
    still = Analyzer(settings=Settings(_env_file=None)).analyze(first_frame())
    first = sorted((lab for lab in got if lab.frame_index == 0), key=lambda lab: lab.face_index)
    assert [(lab.bbox.x, lab.bbox.y, lab.bbox.w, lab.bbox.h) for lab in first] == [r.box for r in still]
    for lab, r in zip(first, still):
        np.testing.assert_allclose(lab.probabilities, list(r.probabilities.values()), atol=1e-5)


@pytest.mark.redis
def test_a_failing_callback_stops_the_pipeline_and_run_raises_it(redis_settings):
    calls = []

    def on_label(label: Label) -> None:
        calls.append(label)
        raise KeyError("the program's bug")

    pipeline = Pipeline("demo", on_label, realtime=False, settings=redis_settings)  # the test Redis, its prefix
    with pytest.raises(KeyError, match="the program's bug"):
        pipeline.run()
    assert len(calls) == 1
    assert pipeline.stopped and all(not c.running for c in pipeline._sup.children)
    with pytest.raises(KeyError):
        pipeline.stop()  # the error stays the pipeline's answer


def test_bad_arguments_are_config_errors_before_anything_starts(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        Pipeline(str(tmp_path / "missing.mp4"), print, settings=Settings(_env_file=None)).start()
    with pytest.raises(ConfigError, match="one per source"):
        Pipeline(["demo", "demo"], print, camera_ids=["a"])
    with pytest.raises(ConfigError, match="invalid setting producer.detect_every"):
        Pipeline("demo", print, detect_every=0)
    with pytest.raises(ConfigError, match="at least one source"):
        Pipeline([], print)


@pytest.mark.redis
def test_start_and_stop_in_a_with_block_on_a_shared_redis(redis_settings):
    got: list[Label] = []
    done = threading.Event()

    def on_label(label: Label) -> None:
        got.append(label)
        if len(got) >= 20:
            done.set()

    prefix = f"test-{uuid.uuid4().hex[:8]}"
    with Pipeline("demo", on_label, realtime=False, redis_url=redis_settings.redis.url, prefix=prefix,
                  settings=Settings(_env_file=None)) as pipeline:
        assert done.wait(60), "no labels within a minute"
    assert pipeline.stopped and len(got) >= 20
    assert {lab.camera_id for lab in got} == {"short_hamilton_clip"}
    # The pipeline's consumer group went with it: nothing holds the trim accounting back.
    t = Transport.connect(pipeline.settings)
    try:
        assert t.groups(t.keys.labels) == []
    finally:
        t.close()
    with pytest.raises(AttributeError):
        pipeline._broker.url  # noqa: B018 - a given Redis: no embedded broker was started


def test_labels_trimmed_before_a_slow_callback_got_them_stop_the_pipeline(tmp_path):
    got: list[Label] = []

    def slow(label: Label) -> None:
        got.append(label)
        time.sleep(0.02)  # slower than the workers label the clip with realtime=False

    s = Settings(_env_file=None).with_updates(streams={"labels_maxlen": 10})  # ten entries (worker batches)
    pipeline = Pipeline("demo", slow, realtime=False, log_dir=tmp_path / "logs", settings=s)
    with pytest.raises(PipelineError, match=r"\d+ labels were trimmed from .* before on_label got them"):
        pipeline.run()
    assert pipeline.stopped and got and pipeline.delivered == len(got)
    assert all(not c.running for c in pipeline._sup.children)


@pytest.mark.redis
def test_a_reader_error_is_not_blamed_on_the_callback(redis_settings, caplog):
    calls = []
    pipeline = Pipeline("demo", calls.append, realtime=False, settings=redis_settings)
    pipeline.start()
    boom = RuntimeError("the reader broke")

    def broken(*_a, **_kw):
        raise boom

    pipeline._reader._read = broken
    with pytest.raises(RuntimeError, match="the reader broke"):
        pipeline.run()
    assert "reading the labels failed (RuntimeError: the reader broke)" in caplog.text
    assert "on_label raised" not in caplog.text
