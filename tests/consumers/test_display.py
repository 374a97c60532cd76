from __future__ import annotations

import threading
import time

import av
import numpy as np
import pytest

from fer_pipeline.consumers.display import DisplayService, screen_available
from fer_pipeline.messages import BBox
from fer_pipeline.streams import DISPLAY_GROUP
from tests.factories import make_end, make_frame, make_label, scene

FRAMES = 10
BOX = BBox(x=40, y=30, w=60, h=60)


def marked_scene(frame_index: int) -> np.ndarray:
    """A frame whose top-left patch brightness encodes its index, to check order in the video."""
    img = scene()
    img[0:16, 0:16] = 20 + 20 * frame_index
    return img


def publish_frames(transport, camera_id: str, frames: list, end: bool = True) -> None:
    payloads = [f.encode() for f in frames]
    if end:
        payloads.append(make_end(camera_id=camera_id, frames=len(frames)).encode())
    transport.publish(transport.keys.frames(camera_id), payloads, transport.settings.streams.frames_maxlen)
    transport._client.sadd(transport.keys.cameras, camera_id)


def publish_labels(transport, labels: list) -> None:
    transport.publish(transport.keys.labels, [lab.encode() for lab in labels], transport.settings.streams.labels_maxlen)


def run_until(service: DisplayService, done, timeout: float = 15.0) -> None:
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not done():
        time.sleep(0.02)
    service.request_stop()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert done(), f"condition not reached: {service.counters}"


def read_video(path) -> tuple[int, list[np.ndarray]]:
    """The frame count the MP4 declares and its decoded frames (BGR); it must be browser-playable H.264."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(stream)]
        return stream.frames, frames


@pytest.mark.redis
def test_two_cameras_become_two_videos_in_order(redis_settings, real_transport):
    settings = redis_settings.with_updates(consumer={"label_wait_ms": 300}, streams={"block_ms": 100})
    cameras = ("cam-a", "cam/b")  # a camera id that is not a safe file name
    for cam in cameras:
        # Frame 3 has no faces; frame 5's label never arrives; the rest have one labelled face.
        frames = [make_frame(camera_id=cam, frame_index=i, faces=0 if i == 3 else 1, image=marked_scene(i))
                  for i in range(FRAMES)]
        publish_frames(real_transport, cam, frames)
        publish_labels(real_transport, [make_label(camera_id=cam, frame_index=i, bbox=BOX, emotion="happy")
                                        for i in range(FRAMES) if i not in (3, 5)])
    real_transport.publish(real_transport.keys.frames("cam-a"), [b"\xc1 not msgpack"], 300)

    service = DisplayService(settings, real_transport, ident="disp-1")
    started = time.monotonic()
    run_until(service, lambda: service.counters["videos_written"] == 2)
    assert time.monotonic() - started >= 0.3  # the unlabelled frame was waited for

    c = service.counters
    assert c["frames_drawn"] == 2 * FRAMES
    assert c["labels_joined"] == 2 * (FRAMES - 2)
    assert c["frames_incomplete"] == 2 and c["labels_stale_drawn"] == 2  # frame 5: track 0's last label
    assert c["dead_letters"] == 1
    outputs = service.outputs()
    assert set(outputs) == set(cameras)
    assert outputs["cam/b"].name == "cam_b-r1.mp4"  # <camera>-<run>.mp4, the camera id made a file name
    for cam in cameras:
        path = outputs[cam]
        assert path.parent == settings.consumer.out_dir and path.stat().st_size > 0
        count, frames = read_video(path)
        assert count == FRAMES and len(frames) == FRAMES
        assert frames[0].shape == scene().shape
        # Per-camera frame order survives the wait on frame 5 (index encoded in a corner patch).
        marks = [int(f[4:12, 4:12].mean()) for f in frames]
        assert all(abs(m - (20 + 20 * i)) < 12 for i, m in enumerate(marks)), marks
        # The overlay is in the video: the box's left edge differs from the plain scene;
        # frame 3 (no faces) has no box there.
        edge = (slice(BOX.y + 5, BOX.y + BOX.h - 5), slice(BOX.x - 1, BOX.x + 2))
        plain = scene().astype(int)[edge]
        assert np.abs(frames[0].astype(int)[edge] - plain).mean() > 40
        assert np.abs(frames[3].astype(int)[edge] - plain).mean() < 15
    for stream in [real_transport.keys.labels, *(real_transport.keys.frames(c) for c in cameras)]:
        assert real_transport.backlog(stream, DISPLAY_GROUP) == (0, 0)


@pytest.mark.redis
def test_displays_in_their_own_groups_each_draw_every_frame(redis_settings, real_transport, tmp_path):
    frames = [make_frame(camera_id="cam-a", frame_index=i, faces=1, image=marked_scene(i)) for i in range(FRAMES)]
    publish_frames(real_transport, "cam-a", frames)
    publish_labels(real_transport, [make_label(camera_id="cam-a", frame_index=i, bbox=BOX) for i in range(FRAMES)])
    services = []
    for group in ("display", "lobby-screen"):
        settings = redis_settings.with_updates(
            streams={"block_ms": 100}, consumer={"display_group": group, "out_dir": tmp_path / group})
        services.append(DisplayService(settings, real_transport, ident=f"{group}-1"))
    threads = [threading.Thread(target=s.run, daemon=True) for s in services]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not all(s.counters["videos_written"] == 1 for s in services):
        time.sleep(0.02)
    for s, t in zip(services, threads):
        s.request_stop()
        t.join(timeout=5)
    for s in services:
        assert s.counters["frames_drawn"] == FRAMES and s.counters["labels_joined"] == FRAMES, s.counters
        assert read_video(s.outputs()["cam-a"])[0] == FRAMES
        assert real_transport.backlog(real_transport.keys.labels, s.group) == (0, 0)


def test_display_group_names_are_validated(settings):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        settings.with_updates(consumer={"display_group": "two words"})


@pytest.mark.redis
def test_late_labels_are_counted_and_timely_ones_joined(redis_settings, real_transport):
    settings = redis_settings.with_updates(consumer={"label_wait_ms": 150}, streams={"block_ms": 50})
    service = DisplayService(settings, real_transport, ident="disp-2")
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        publish_frames(real_transport, "cam0", [make_frame(frame_index=0)], end=False)
        deadline = time.monotonic() + 10
        while service.counters["frames_drawn"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        publish_labels(real_transport, [make_label(frame_index=0)])          # after the frame was drawn
        publish_labels(real_transport, [make_label(frame_index=1)])          # before its frame
        publish_frames(real_transport, "cam0", [make_frame(frame_index=1)], end=True)
        while service.counters["videos_written"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        service.request_stop()
        thread.join(timeout=5)
    c = service.counters
    assert c["labels_late"] == 1 and c["labels_joined"] == 1
    assert c["frames_drawn"] == 2 and c["frames_incomplete"] == 1 and c["videos_written"] == 1
    assert read_video(service.outputs()["cam0"])[0] == 2


def test_finish_flushes_pending_frames(settings, fake_transport):
    settings = settings.with_updates(consumer={"label_wait_ms": 60_000})
    publish_frames(fake_transport, "cam0", [make_frame(frame_index=i) for i in range(5)], end=False)
    service = DisplayService(settings, fake_transport, ident="disp-3")
    service.setup()
    for _ in range(3):
        service.step()  # fakeredis does not block: each step returns at once
    assert service.counters["frames_drawn"] == 0  # still waiting for labels
    service.finish()
    assert service.counters["frames_drawn"] == 5 and service.counters["videos_written"] == 1
    assert read_video(service.outputs()["cam0"])[0] == 5


def test_buffer_is_capped_by_drawing_the_oldest(settings, fake_transport):
    settings = settings.with_updates(consumer={"label_wait_ms": 60_000})
    # 10 fps -> room for max(30, 3 s * 10) = 30 frames; 40 waiting frames force 10 out.
    publish_frames(fake_transport, "cam0", [make_frame(frame_index=i, fps=10.0) for i in range(40)], end=False)
    service = DisplayService(settings, fake_transport, ident="disp-4")
    service.setup()
    service.step()
    assert service.counters["frames_forced"] == 10 and service.counters["frames_drawn"] == 10
    assert service.info()["buffered"] == 30
    service.finish()
    assert read_video(service.outputs()["cam0"])[0] == 40


def test_window_mode_follows_the_screen(settings, fake_transport, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    auto = settings.with_updates(consumer={"window": "auto"})
    if screen_available():  # macOS/Windows always count as having a screen
        pytest.skip("this platform always reports a screen")
    assert DisplayService(auto, fake_transport).windowed is False
    monkeypatch.setenv("DISPLAY", ":0")
    assert DisplayService(auto, fake_transport).windowed is True
    assert DisplayService(settings, fake_transport).windowed is False  # window "off"


def test_restarted_display_takes_back_what_its_killed_predecessor_held(settings, fake_transport):
    t = fake_transport
    publish_frames(t, "cam0", [make_frame(frame_index=i, faces=0) for i in range(4)], end=False)
    t.ensure_group(t.keys.frames("cam0"), DISPLAY_GROUP)
    # The predecessor read two frames and was killed before acking them.
    held = t.read_group([t.keys.frames("cam0")], DISPLAY_GROUP, "disp", count=2, block_ms=None)
    assert len(held) == 2
    service = DisplayService(settings, t, ident="disp")
    service.setup()
    assert service.counters["entries_resumed"] == 2
    assert t._client.xpending(t.keys.frames("cam0"), DISPLAY_GROUP)["pending"] == 0
    for _ in range(3):
        service.step()
    service.finish()
    assert service.counters["frames_drawn"] == 4  # the two taken back, then the two never delivered
    assert read_video(service.outputs()["cam0"])[0] == 4


def test_frames_declaring_huge_images_are_dead_lettered_undecoded(settings, fake_transport):
    import struct

    sof = struct.pack(">BHHB", 8, 20_000, 20_000, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    bomb = b"\xff\xd8\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\x00" * 64
    good = make_frame(frame_index=1, faces=0)
    publish_frames(fake_transport, "cam0", [make_frame(frame_index=0, faces=0).model_copy(update={"jpeg": bomb}), good])
    service = DisplayService(settings, fake_transport, ident="disp")
    drain(service)
    dead = fake_transport._client.xrange(fake_transport.keys.dead)
    assert len(dead) == 1 and b"20000x20000 exceeds max_frame_pixels" in dead[0][1][b"reason"]
    assert service.counters["frames_drawn"] == 1


def drain(service: DisplayService, steps: int = 3) -> None:
    service.setup()
    for _ in range(steps):
        service.step()  # fakeredis does not block: each step returns at once
    service.finish()


@pytest.mark.parametrize("fps", [1e-5, 0.5, 1000.0])
def test_any_valid_frame_rate_writes_a_video(settings, fake_transport, fps):
    # MPEG-4 refuses a time base beyond 1/65535 s: the writer's rate is clamped, the frames kept.
    publish_frames(fake_transport, "cam0", [make_frame(frame_index=i, faces=0, fps=fps) for i in range(3)])
    service = DisplayService(settings, fake_transport, ident="disp")
    drain(service)
    assert service.counters["frames_drawn"] == 3 and service.counters["videos_written"] == 1
    assert read_video(service.outputs()["cam0"])[0] == 3


def test_a_frame_taller_than_mpeg4_allows_is_written_scaled(settings, fake_transport):
    # A 596x8400 PNG from an image folder is legitimate input; MPEG-4 stops below 8192 px a side.
    tall = scene(width=596, height=8400)
    publish_frames(fake_transport, "cam0", [make_frame(frame_index=i, faces=0, image=tall) for i in range(2)])
    service = DisplayService(settings, fake_transport, ident="disp")
    drain(service)
    count, frames = read_video(service.outputs()["cam0"])
    assert count == 2 and max(frames[0].shape[:2]) <= 4096


def test_segments_start_a_new_file_every_n_seconds_of_video(settings, fake_transport, tmp_path):
    settings = settings.with_updates(consumer={"video_segment_s": 1.0, "out_dir": tmp_path})
    publish_frames(fake_transport, "cam0", [make_frame(frame_index=i, faces=0, fps=10.0) for i in range(25)])
    service = DisplayService(settings, fake_transport, ident="disp")
    drain(service)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["cam0-r1-001.mp4", "cam0-r1-002.mp4", "cam0-r1-003.mp4"]  # no .part left behind
    assert service.counters["videos_written"] == 3 and service.outputs()["cam0"].name == "cam0-r1-003.mp4"
    assert [read_video(tmp_path / n)[0] for n in names] == [10, 10, 5]


def test_a_new_run_of_a_camera_gets_its_own_file(settings, fake_transport, tmp_path):
    settings = settings.with_updates(consumer={"out_dir": tmp_path})
    # The producer restarted without an end marker (killed); the first run's end arrives late.
    publish_frames(fake_transport, "cam0", [make_frame(run_id="r1", frame_index=i, faces=0) for i in range(3)],
                   end=False)
    publish_frames(fake_transport, "cam0", [make_frame(run_id="r2", frame_index=i, faces=0) for i in range(2)],
                   end=False)
    fake_transport.publish(fake_transport.keys.frames("cam0"), [make_end(run_id="r1").encode()], 300)
    service = DisplayService(settings, fake_transport, ident="disp")
    service.setup()
    for _ in range(3):
        service.step()
    assert service.counters["videos_written"] == 1  # r1's file; r2's stays open past r1's late end
    assert (tmp_path / "cam0-r2.mp4.part").exists()
    service.finish()
    assert read_video(tmp_path / "cam0-r1.mp4")[0] == 3 and read_video(tmp_path / "cam0-r2.mp4")[0] == 2
    assert service.counters["videos_written"] == 2


def test_a_display_that_crashes_still_finishes_its_videos(settings, fake_transport, tmp_path, monkeypatch):
    settings = settings.with_updates(consumer={"out_dir": tmp_path, "label_wait_ms": 0})
    publish_frames(fake_transport, "cam0", [make_frame(frame_index=i, faces=0) for i in range(4)], end=False)
    service = DisplayService(settings, fake_transport, ident="disp")
    step = service.step

    def step_then_fail() -> None:
        step()
        if service.counters["frames_drawn"] == 4:
            raise RuntimeError("a bug in the display")

    monkeypatch.setattr(service, "step", step_then_fail)
    with pytest.raises(RuntimeError):
        service.run()
    assert read_video(tmp_path / "cam0-r1.mp4")[0] == 4 and service.counters["videos_written"] == 1
