from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from fer_pipeline.errors import SourceError
from fer_pipeline.images import image_dimensions
from fer_pipeline.labels import FER2013_CODE_NAMES
from fer_pipeline.producers.sources import (
    ImageFolderSource,
    LiveSource,
    Pacer,
    ReplaySource,
    VideoClock,
    VideoFileSource,
    open_source,
)
from tests.producers.conftest import write_replay_npz


def take(source, n: int | None = None, stop: threading.Event | None = None) -> list:
    stop = stop or threading.Event()
    out = []
    for frame in source.frames(stop):
        out.append(frame)
        if n is not None and len(out) >= n:
            stop.set()
    return out


# -- spec parsing ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("missing.mp4", "cannot open video file 'missing.mp4': no such file"),
        ("nothing-here", "cannot open source 'nothing-here': no such file or folder"),
        ("ftp://host/x", "unsupported source scheme 'ftp://'"),
        ("", "empty source"),
        ("replay:", "names no file"),
        ("replay:missing.npz", "cannot open replay 'missing.npz': no such file"),
        ("rtsp:///path", "no host in the URL"),
    ],
)
def test_bad_specs_raise_one_clear_line(spec, message, settings):
    with pytest.raises(SourceError) as e:
        open_source(spec, settings)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("query", "message"),
    [("fps=0", "fps must be"), ("faces=99", "faces must be 1..64"), ("speed=2", "unknown option 'speed'"),
     ("fps=abc", "could not convert"), ("limit=0", "limit must be")],
)
def test_bad_replay_options(query, message, replay_npz, settings):
    with pytest.raises(SourceError, match=message):
        open_source(f"replay:{replay_npz}?{query}", settings)


def test_a_file_that_is_not_a_video(tmp_path, settings):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    with pytest.raises(SourceError, match="not a readable video"):
        open_source(str(bad), settings)


def test_a_folder_without_images(tmp_path, settings):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(SourceError, match="no .* files in it"):
        open_source(str(tmp_path), settings)


def test_spec_kinds(tmp_path, tiny_video, replay_npz, settings):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    assert isinstance(open_source(str(tiny_video), settings), VideoFileSource)
    assert isinstance(open_source(str(tmp_path), settings), ImageFolderSource)
    assert isinstance(open_source(f"replay:{replay_npz}?fps=10&faces=2", settings), ReplaySource)


# -- video files -------------------------------------------------------------------------------
def test_video_file_reads_every_frame_then_ends(tiny_video, settings):
    s = settings.with_updates(producer={"realtime": False})
    with open_source(str(tiny_video), s) as src:
        assert src.finite and src.fps == pytest.approx(25.0) and src.name == "tiny"
        frames = take(src)
    assert [f.index for f in frames] == list(range(10))
    assert frames[0].image.shape == (48, 64, 3) and all(f.crops is None for f in frames)
    assert [f.position_s for f in frames] == pytest.approx([i / 25 for i in range(10)])


def test_video_file_loops_with_increasing_indices(tiny_video, settings):
    s = settings.with_updates(producer={"realtime": False, "loop": True})
    with open_source(str(tiny_video), s) as src:
        assert not src.finite
        frames = take(src, 25)
    assert [f.index for f in frames] == list(range(25))
    # Frame 10 is the first frame again (the synthetic video's brightness ramps by frame).
    assert abs(int(frames[10].image.mean()) - int(frames[0].image.mean())) <= 2
    # The index goes on across loops; the position is in the video, so it starts over.
    assert [f.position_s for f in frames] == pytest.approx([(i % 10) / 25 for i in range(25)])


def test_realtime_video_is_paced_to_its_fps(tiny_video, settings):
    with open_source(str(tiny_video), settings.with_updates(producer={"realtime": True})) as src:
        t0 = time.monotonic()
        take(src, 6)
        elapsed = time.monotonic() - t0
    assert elapsed >= 5 / 25 * 0.9  # 6 frames at 25 fps span 5 periods


# -- video time --------------------------------------------------------------------------------
def write_av(path, pts_ms: list[int], codec: str = "mjpeg", fmt: str | None = None, rate: int = 25):
    """A video whose frames carry the presentation times ``pts_ms`` (PyAV, as a phone's
    variable-rate recording does); frame i is filled with 20 * i."""
    import fractions

    import av

    ms = fractions.Fraction(1, 1000)
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.time_base = 64, 48, ms
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for i, t in enumerate(pts_ms):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 20 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = t, ms
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def test_video_positions_are_the_containers_timestamps(tmp_path, settings):
    """A variable-rate file: positions are where a player shows each frame, not index / fps
    (which would put the last frame at 0.28 s instead of 1.0 s), and a replay as fast as
    possible keeps them while its wall-clock times shrink."""
    pts = [0, 40, 80, 200, 240, 600, 640, 1000]
    path = write_av(tmp_path / "vfr.mkv", pts)
    with open_source(str(path), settings.with_updates(producer={"realtime": False})) as src:
        assert src.fps == pytest.approx(25.0)
        frames = take(src)
    assert [f.position_s for f in frames] == pytest.approx([t / 1000 for t in pts])
    assert frames[-1].captured_at - frames[0].captured_at < 0.9  # read in far less than the video's 1 s
    assert [round(float(f.image.mean()) / 20) for f in frames] == list(range(len(pts)))  # in order, none lost


def test_video_without_timestamps_counts_frame_periods(tmp_path, settings):
    """A raw H.264 stream has no timestamps (OpenCV reads 0 for every frame): each frame is one
    period of the nominal rate after the previous one."""
    path = write_av(tmp_path / "raw.h264", list(range(6)), codec="libx264", fmt="h264")
    with open_source(str(path), settings.with_updates(producer={"realtime": False})) as src:
        frames = take(src)
    assert [f.position_s for f in frames] == pytest.approx([i / 25 for i in range(6)])


@pytest.mark.parametrize(("reads_ms", "positions"), [
    ([0, 40, 80, 120], [0, 0.04, 0.08, 0.12]),      # timestamps, taken as they are
    ([0, 0, 0], [0, 0.1, 0.2]),                     # none at all: a period per frame
    ([0, 40, 0, 160], [0, 0.04, 0.14, 0.16]),       # one missing (an MPEG-PS's flushed last frame)
    ([500, 300, 900], [0.5, 0.6, 0.9]),             # a jump back: never backwards
    ([float("nan"), -5.0, 1e13, 100], [0, 0.1, 0.2, 0.2 + 0.1]),  # garbage (1e13 ms is past MAX_TIME)
])
def test_video_clock_takes_timestamps_that_move_forwards(reads_ms, positions):
    clock = VideoClock(10.0)
    assert [clock.position(ms) for ms in reads_ms] == pytest.approx(positions)
    clock.rewind()  # a looping source reopened its file
    assert clock.position(reads_ms[0]) == pytest.approx(positions[0])


def test_replay_positions_are_its_frames_at_its_rate(replay_npz, settings):
    s = settings.with_updates(producer={"realtime": False})
    with open_source(f"replay:{replay_npz}?fps=12.5&faces=2&loop=1", s) as src:
        frames = take(src, 5)
    # 5 faces in frames of 2: 3 frames a pass, 0.08 s apart, from 0 again on each loop.
    assert [f.position_s for f in frames] == pytest.approx([0.0, 0.08, 0.16, 0.0, 0.08])


def test_image_folders_and_live_sources_have_no_position(tmp_path, settings):
    cv2.imwrite(str(tmp_path / "one.png"), np.zeros((10, 10, 3), np.uint8))
    with open_source(str(tmp_path), settings.with_updates(producer={"realtime": False, "loop": True})) as src:
        assert [f.position_s for f in take(src, 2)] == [None, None]
    src = LiveSource("rtsp://cam", "cam", lambda: FakeCapture(3), latest_only=False)
    assert [f.position_s for f in take(src, 3)] == [None] * 3
    src.close()


# -- pacing ------------------------------------------------------------------------------------
def test_pacer_never_accumulates_debt():
    stop = threading.Event()
    p = Pacer(20.0)
    p.wait(stop)
    time.sleep(0.2)  # four periods behind
    t0 = time.monotonic()
    p.wait(stop)  # behind: no sleep
    behind = time.monotonic() - t0
    p.wait(stop)  # the next one is a whole period later, not a catch-up burst
    period = time.monotonic() - t0
    assert behind < 0.02
    assert period >= 0.04


# -- image folders -----------------------------------------------------------------------------
@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp"])
def test_image_dimensions_from_headers(ext):
    ok, data = cv2.imencode(ext, np.zeros((37, 53, 3), np.uint8))
    assert ok and image_dimensions(data.tobytes()) == (53, 37)


def test_image_folder_sorted_skipping_bad_and_oversized_files(tmp_path, settings):
    for i, name in enumerate(["b.png", "a.jpg", "c.bmp"]):
        cv2.imwrite(str(tmp_path / name), np.full((20, 30, 3), 50 * (i + 1), np.uint8))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    cv2.imwrite(str(tmp_path / "huge.png"), np.zeros((100, 100, 3), np.uint8))
    (tmp_path / "notes.txt").write_text("ignored: not an image suffix")
    s = settings.with_updates(producer={"realtime": False, "max_image_pixels": 50 * 50})
    with open_source(str(tmp_path), s) as src:
        frames = take(src)
        assert src.stats["skipped"] == 2  # broken.png and huge.png
    # a.jpg, b.png, c.bmp in name order: their fill values were 100, 50, 150.
    assert [round(float(f.image.mean())) for f in frames] == [100, 50, 150]
    assert [f.index for f in frames] == [0, 1, 2]


def test_image_folder_loops(tmp_path, settings):
    cv2.imwrite(str(tmp_path / "one.png"), np.zeros((10, 10, 3), np.uint8))
    s = settings.with_updates(producer={"realtime": False, "loop": True})
    with open_source(str(tmp_path), s) as src:
        assert [f.index for f in take(src, 4)] == [0, 1, 2, 3]


# -- labelled replay ---------------------------------------------------------------------------
def test_replay_carries_crops_with_truth_labels(tmp_path, settings):
    path = tmp_path / "r.npz"
    codes = write_replay_npz(path, n=5)
    s = settings.with_updates(producer={"realtime": False})
    with open_source(f"replay:{path}?fps=12.5&faces=2", s) as src:
        assert src.fps == 12.5 and src.finite
        frames = take(src)
    with np.load(path) as z:
        images = z["images"]
    assert [len(f.crops) for f in frames] == [2, 2, 1]
    crops = [c for f in frames for c in f.crops]
    assert [c.truth for c in crops] == [FER2013_CODE_NAMES[c] for c in codes]
    assert [c.track_id for c in crops] == [0, 1, 2, 3, 4]
    assert all(np.array_equal(c.pixels, images[c.track_id]) for c in crops)
    # The display mosaic shows each face (2x) where its box says.
    first = frames[0]
    x, y, w, h = first.crops[1].box
    tile = first.image[y:y + h, x:x + w, 0]
    assert np.array_equal(cv2.resize(tile, (48, 48), interpolation=cv2.INTER_NEAREST), images[1])


def test_replay_realtime_pacing_and_loop(replay_npz, settings):
    s = settings.with_updates(producer={"realtime": True})
    with open_source(f"replay:{replay_npz}?fps=40&faces=3&loop=1", s) as src:
        assert not src.finite
        frames = take(src, 5)
    assert [f.index for f in frames] == list(range(5))
    times = [f.captured_at for f in frames]
    assert times == sorted(times)
    # Paced: frame k is due at start + k/fps, so 5 frames can't span less than 4/40 s. (A lower
    # bound only: on a loaded machine a late frame is followed by a short gap, by design.)
    assert times[-1] - times[0] >= 0.95 * 4 / 40
    # Looping restarts at row 0: 5 rows in frames of 3 -> rows 0-2, 3-4, 0-2, ...
    assert [c.track_id for c in frames[2].crops] == [0, 1, 2]


def test_replay_limit(replay_npz, settings):
    with open_source(f"replay:{replay_npz}?limit=3&faces=2", settings.with_updates(producer={"realtime": False})) as src:
        assert sum(len(f.crops) for f in take(src)) == 3


# -- live sources ------------------------------------------------------------------------------
class FakeCapture:
    def __init__(self, frames: int, opened: bool = True) -> None:
        self.left, self.opened = frames, opened

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.opened

    def read(self):
        if self.left <= 0:
            return False, None
        self.left -= 1
        return True, np.zeros((4, 4, 3), np.uint8)

    def get(self, prop):
        return 15.0

    def release(self) -> None:
        self.opened = False


class RecordingEvent(threading.Event):
    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout=None):
        self.waits.append(timeout)
        return self.is_set()


def test_live_source_reconnects_with_capped_backoff():
    # 2 frames, then the stream drops; reopening fails twice, then works for 2 more frames, drops again.
    caps = iter([FakeCapture(2), FakeCapture(0, opened=False), FakeCapture(0, opened=False), FakeCapture(2),
                 FakeCapture(0, opened=False), FakeCapture(3)])
    src = LiveSource("rtsp://cam", "cam", lambda: next(caps), backoff_initial_s=0.1, backoff_max_s=0.3,
                     latest_only=False)  # every frame in order: the reconnect sequence is exact
    assert src.fps == 15.0 and not src.finite
    stop = RecordingEvent()
    frames = take(src, 7, stop)
    assert [f.index for f in frames] == list(range(7))
    assert src.stats["reconnects"] == 5
    # Doubling from 0.1, capped at 0.3, and back to 0.1 after frames flow again.
    assert stop.waits == pytest.approx([0.1, 0.2, 0.3, 0.1, 0.2])


class CameraCapture(FakeCapture):
    """A device that delivers a frame every ``period`` seconds (read blocks until then)."""

    def __init__(self, frames: int, period: float = 0.002) -> None:
        super().__init__(frames)
        self.period = period

    def read(self):
        time.sleep(self.period)
        return super().read()


def test_live_source_hands_a_slow_producer_the_newest_frame():
    src = LiveSource(0, "cam0", lambda: CameraCapture(100_000))
    ages, frames = [], []
    stop = threading.Event()
    for frame in src.frames(stop):
        ages.append(time.time() - frame.captured_at)
        frames.append(frame)
        time.sleep(0.03)  # processing slower than the camera: ~15 frames arrive meanwhile
        if len(frames) == 10:
            stop.set()
    src.close()
    idx = [f.index for f in frames]
    assert idx == sorted(set(idx)) and idx[-1] - idx[0] > 9 * 5  # skipped ahead, never back
    assert src.stats["stale_skipped"] == idx[-1] - len(idx) + 1
    # Each frame handed over is at most about one camera period old, not a growing backlog.
    assert max(ages) < 0.02, ages
    assert not [t for t in threading.enumerate() if t.name == "grab-cam0"]


def test_live_source_grabber_reconnects_and_stops_on_close():
    caps = iter([CameraCapture(3), FakeCapture(0, opened=False), CameraCapture(100_000)])
    src = LiveSource("rtsp://cam", "cam", lambda: next(caps), backoff_initial_s=0.01, backoff_max_s=0.02)
    frames = take(src, 8)
    assert src.stats["reconnects"] == 2 and [f.index for f in frames] == sorted({f.index for f in frames})
    src.close()
    assert src._cap is None and not [t for t in threading.enumerate() if t.name == "grab-cam"]


def test_live_source_that_cannot_open():
    with pytest.raises(SourceError, match="cannot open webcam 7: no camera"):
        LiveSource(7, "cam7", lambda: FakeCapture(0, opened=False))
    with pytest.raises(SourceError, match=r"stream 'rtsp://u:\*\*\*@h/x'"):
        LiveSource("rtsp://u:secret@h/x", "h", lambda: FakeCapture(0, opened=False))


def test_pacer_adds_up_the_time_a_slow_consumer_lost():
    import threading
    import time

    from fer_pipeline.producers.sources import Pacer

    pacer, stop = Pacer(100.0), threading.Event()  # a frame every 10 ms
    pacer.wait(stop)
    time.sleep(0.05)  # the consumer took 50 ms over one frame: 40 ms behind
    pacer.wait(stop)
    assert 0.035 <= pacer.lost_s <= 0.2
    before = pacer.lost_s
    pacer.wait(stop)  # on time again: sleeps, loses nothing
    assert pacer.lost_s == before


def test_finite_sources_say_how_many_frames_they_hold_and_endless_ones_zero(tiny_video, replay_npz, tmp_path,
                                                                            settings):
    once = settings.with_updates(producer={"realtime": False})
    looped = settings.with_updates(producer={"realtime": False, "loop": True})
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.zeros((10, 10, 3), np.uint8))
    with open_source(str(tiny_video), once) as src:
        assert src.frame_count == len(take(src)) == 10
    with open_source(str(tmp_path), once) as src:
        assert src.frame_count == len(take(src)) == 3
    with open_source(f"replay:{replay_npz}?faces=4", once) as src:
        assert src.frame_count == len(take(src, 10_000))
    for spec in (str(tiny_video), str(tmp_path), f"replay:{replay_npz}?faces=4&loop=1"):
        with open_source(spec, looped) as src:
            assert src.frame_count == 0
