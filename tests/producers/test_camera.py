from __future__ import annotations

import threading
import time
from collections import Counter

import numpy as np
import pytest
import redis

from fer_pipeline.errors import ConfigError, SourceError
from fer_pipeline.labels import FER2013_CODE_NAMES
from fer_pipeline.messages import EndOfStream, FaceCrop, Frame, decode
from fer_pipeline.producers.camera import BacklogGauge, CameraProducer, ProducerService, build_producer_service
from fer_pipeline.producers.publisher import Outgoing, Publisher
from fer_pipeline.producers.sources import CapturedFrame, open_source
from tests.fakes import BrokenSource, ScriptedDetector, stream_messages


# -- end to end against the real Redis ---------------------------------------------------------
@pytest.mark.redis
@pytest.mark.data
@pytest.mark.slow
def test_producer_publishes_hamilton_clip_end_to_end(video_dir, redis_settings, real_transport):
    # detect_width keeps this test a few seconds on a shared CPU; the pipeline is the same.
    s = redis_settings.with_updates(producer={"realtime": False, "detect_width": 320})
    t = real_transport
    service = build_producer_service(s, t, [str(video_dir / "short_hamilton_clip.mp4")])
    assert service.run() == 0
    keys = t.keys
    cam = "short_hamilton_clip"
    assert t._client.smembers(keys.cameras) == {cam.encode()}

    crops = stream_messages(t, keys.crops)
    assert all(isinstance(c, FaceCrop) for c in crops)
    assert len(crops) == service.counters["crops_published"] == t.depth(keys.crops) > 0
    assert len({c.crop_id for c in crops}) == len(crops)
    assert all(c.pixels().shape == (48, 48) and c.camera_id == cam and c.run_id == service.run_id for c in crops)
    # Tracks persist: some person is seen in several frames under one id.
    per_track = Counter(c.track_id for c in crops)
    assert max(per_track.values()) >= 5
    for c in crops:
        assert c.faces_in_frame == sum(o.frame_index == c.frame_index for o in crops)

    msgs = stream_messages(t, keys.frames(cam))
    frames, end = msgs[:-1], msgs[-1]
    assert all(isinstance(f, Frame) for f in frames) and isinstance(end, EndOfStream)
    assert [f.frame_index for f in frames] == list(range(275))
    assert sum(f.faces for f in frames) == len(crops)
    assert frames[0].fps == pytest.approx(29.97) and frames[0].scale == 1.0
    assert end.frames == 275 and end.crops == len(crops)
    c = service.counters
    assert c["frames"] == 275 and c["crops_dropped"] == 0 and c["faces"] == c["crops_published"]
    assert c["detect_ms"] > 0
    # The clip's timestamps are a constant 29.97 fps: each face's place in the video.
    assert all(c.position_s == pytest.approx(c.frame_index / 29.97) for c in crops)


# -- backpressure and failure isolation (fakeredis) --------------------------------------------
def test_deep_backlog_drops_crops_but_keeps_frames(replay_npz, settings, fake_transport):
    s = settings.with_updates(producer={"realtime": False}, streams={"max_crop_backlog": 3})
    t = fake_transport
    t.publish(t.keys.crops, [b"x"], 100)  # a backlog of 1: the first frame still goes out
    service = build_producer_service(s, t, [f"replay:{replay_npz}?faces=2"], ["r"])
    # Checked every frame, queued crops included: deterministic however far the publisher lags.
    service.cameras[0].backlog = BacklogGauge(t, service.publisher, interval_s=0.0)
    assert service.run() == 0
    # Frame 0 publishes 2 crops (backlog 1 -> 3); frame 1 sees 3 (not over); frame 2 sees 5 > 3: dropped.
    assert service.counters["crops_published"] == 4 and service.counters["crops_dropped"] == 1
    frames = stream_messages(t, t.keys.frames("r"))
    assert [f.faces for f in frames[:-1]] == [2, 2, 0]
    published = [decode(e.payload) for e in t.entries(t.keys.crops)[1:]]
    assert [c.truth for c in published] == list(FER2013_CODE_NAMES[:4])  # rows 0-3 hold codes 0-3


def test_backlog_gauge_polls_redis_at_most_once_per_interval(settings, fake_transport):
    calls = []
    real = fake_transport.lengths
    fake_transport.lengths = lambda keys: calls.append(keys) or real(keys)
    gauge = BacklogGauge(fake_transport, Publisher(fake_transport, settings, []), interval_s=60.0)
    assert [gauge.depth() for _ in range(50)] == [0] * 50
    assert len(calls) == 1


def test_backlog_gauge_never_waits_long_on_a_hung_publish(settings, fake_transport):
    """While a publish hangs (Redis stalled), cameras get the last reading plus the queue at
    once instead of waiting with the round trip."""
    publisher = Publisher(fake_transport, settings, ["a"])
    gauge = BacklogGauge(fake_transport, publisher, interval_s=0.0)
    assert gauge.depth() == 0
    publisher.submit(Outgoing("a", [b"x", b"y"], None))  # not started: stays queued
    with publisher.sending:  # a round trip in flight that does not come back
        t0 = time.monotonic()
        assert gauge.depth() == 2
        assert time.monotonic() - t0 < 0.5


def test_one_failing_camera_does_not_stop_the_others(replay_npz, settings, fake_transport):
    s = settings.with_updates(producer={"realtime": False})
    good = open_source(f"replay:{replay_npz}?faces=1", s)
    service = ProducerService(s, fake_transport, [("good", good), ("bad", BrokenSource(3))],
                              detector_factory=ScriptedDetector)
    assert service.run() == 1  # a failed camera makes the exit code non-zero
    states = {c.camera_id: c.state for c in service.cameras}
    assert states == {"good": "ended", "bad": "failed"}
    assert "device unplugged" in service.cameras[1].error
    t = fake_transport
    assert len(stream_messages(t, t.keys.frames("good"))) == 5 + 1
    bad = stream_messages(t, t.keys.frames("bad"))
    assert isinstance(bad[-1], EndOfStream) and bad[-1].frames == 3
    assert service.counters["frames"] == 8


def test_crops_carry_their_frames_position_in_the_video(replay_npz, settings, fake_transport):
    s = settings.with_updates(producer={"realtime": False})
    service = ProducerService(s, fake_transport, [("r", open_source(f"replay:{replay_npz}?faces=2&fps=10", s))],
                              detector_factory=ScriptedDetector)
    assert service.run() == 0
    crops = stream_messages(fake_transport, fake_transport.keys.crops)
    assert [(c.frame_index, c.position_s) for c in crops] == [(0, 0.0), (0, 0.0), (1, 0.1), (1, 0.1), (2, 0.2)]


def test_redis_outage_drops_frames_without_stopping_capture(replay_npz, settings, fake_transport, monkeypatch):
    s = settings.with_updates(producer={"realtime": False}, redis={"backoff_initial_s": 0.0})
    real = fake_transport.publish_many
    fails = iter([True, True])

    def flaky(*args, **kwargs):
        if next(fails, False):
            raise redis.ConnectionError("down")
        return real(*args, **kwargs)

    monkeypatch.setattr(fake_transport, "publish_many", flaky)
    service = build_producer_service(s, fake_transport, [f"replay:{replay_npz}?faces=1"], ["r"])
    # One frame per round trip, whatever this machine's speed: otherwise a slow runner can queue
    # all five frames before the first send, and the second failure then takes the end of stream.
    submit = service.publisher.submit

    def submit_and_wait(out):
        queued = submit(out)
        service.publisher.drain(out.camera_id, 10)
        return queued

    monkeypatch.setattr(service.publisher, "submit", submit_and_wait)
    assert service.run() == 0
    c = service.counters
    # Each failed round trip drops the frame it carried; capture went on through both failures
    # and every face is accounted for.
    assert c["frames"] == 5 and c["publish_errors"] == 2 and c["crops_dropped"] == 2
    assert c["crops_published"] + c["crops_dropped"] == 5
    assert c["crops_published"] == len(fake_transport.entries(fake_transport.keys.crops))
    end = stream_messages(fake_transport, fake_transport.keys.frames("r"))[-1]
    assert isinstance(end, EndOfStream) and end.crops == c["crops_published"]


def test_detect_every_reuses_boxes_and_track_ids(settings, fake_transport):
    s = settings.with_updates(producer={"detect_every": 3, "publish_frames": False})
    detector = ScriptedDetector()
    publisher = Publisher(fake_transport, s, ["c"])
    publisher.start()
    cam = CameraProducer("c", BrokenSource(0), s, fake_transport, run_id="r", stop=threading.Event(),
                         backlog=BacklogGauge(fake_transport, publisher), publisher=publisher,
                         detector_factory=lambda: detector)
    for i in range(7):
        cam.process(CapturedFrame(i, 0.0, np.full((80, 80, 3), i, np.uint8)))
    publisher.close(timeout=10)
    assert detector.calls == 3  # frames 0, 3, 6
    crops = stream_messages(fake_transport, fake_transport.keys.crops)
    assert len(crops) == 7 and {c.track_id for c in crops} == {0}
    assert [int(c.pixels()[0, 0]) for c in crops] == list(range(7))  # cut from each frame, not reused


# -- building the service ----------------------------------------------------------------------
def test_camera_ids_derived_unique_or_explicit(tiny_video, settings, fake_transport):
    svc = build_producer_service(settings, fake_transport, [str(tiny_video), str(tiny_video)])
    assert [c.camera_id for c in svc.cameras] == ["tiny", "tiny-2"]
    svc = build_producer_service(settings, fake_transport, [str(tiny_video)], ["door"])
    assert svc.cameras[0].camera_id == "door"
    for cam in svc.cameras:
        cam.source.close()


@pytest.mark.parametrize(
    ("ids", "message"),
    [(["a", "a"], "given more than once"), (["a b", "c"], "must be 1-128 letters"), (["a"], "1 camera id")],
)
def test_bad_camera_ids(ids, message, tiny_video, settings, fake_transport):
    with pytest.raises(ConfigError, match=message):
        build_producer_service(settings, fake_transport, [str(tiny_video), str(tiny_video)], ids)


def test_sources_opened_before_a_failure_are_closed(tiny_video, settings, fake_transport, monkeypatch):
    closed = []
    monkeypatch.setattr("fer_pipeline.producers.sources.VideoFileSource.close", lambda self: closed.append(self))
    with pytest.raises(SourceError, match="no such file"):
        build_producer_service(settings, fake_transport, [str(tiny_video), "missing.mp4"])
    assert len(closed) == 1


def test_stop_request_ends_a_looping_camera(tiny_video, settings, fake_transport):
    s = settings.with_updates(producer={"realtime": True, "loop": True})
    service = build_producer_service(s, fake_transport, [str(tiny_video)], ["loop"], ident="t")

    def stop_after_a_loop():
        # The tiny video has 10 frames: once 15 are out the source has looped; then ask to stop.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(stream_messages(fake_transport, fake_transport.keys.frames("loop"))) < 15:
            time.sleep(0.02)
        service.request_stop()

    stopper = threading.Thread(target=stop_after_a_loop)
    stopper.start()
    assert service.run() == 0
    stopper.join()
    msgs = stream_messages(fake_transport, fake_transport.keys.frames("loop"))
    assert isinstance(msgs[-1], EndOfStream) and len(msgs) - 1 >= 15
    assert msgs[-1].frames == len(msgs) - 1  # the end message counts every frame sent


def test_a_second_start_under_a_given_run_id_continues_it_without_repeating_crop_ids(replay_npz, settings,
                                                                                   fake_transport):
    s = settings.with_updates(producer={"realtime": False, "run_id": "shop-1"})
    first = build_producer_service(s, fake_transport, [f"replay:{replay_npz}"], ["door"])
    other = build_producer_service(s, fake_transport, [f"replay:{replay_npz}"], ["hall"])  # another camera, same run
    again = build_producer_service(s, fake_transport, [f"replay:{replay_npz}"], ["door"])  # door restarted
    assert (first.run_id, other.run_id, again.run_id) == ("shop-1", "shop-1", "shop-1~1")
    # `up` names a restart itself (shop-1~1): that is the first start under that id.
    restarted_by_up = s.with_updates(producer={"run_id": "shop-2~1"})
    assert build_producer_service(restarted_by_up, fake_transport, [f"replay:{replay_npz}"], ["door"]).run_id == \
        "shop-2~1"
    for svc in (first, other, again):
        for cam in svc.cameras:
            cam.source.close()
