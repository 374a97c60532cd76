from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from fer_pipeline.consumers.video import H264File, VideoRecorder, video_rate, video_size


def top_level_boxes(path: Path) -> list[str]:
    """The MP4's top-level box types in file order, read from the bytes."""
    data = path.read_bytes()
    boxes, at = [], 0
    while at + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[at:at + 8])
        if size == 1:  # 64-bit size follows the type
            size = struct.unpack(">Q", data[at + 8:at + 16])[0]
        elif size == 0:  # to the end of the file
            size = len(data) - at
        assert size >= 8, f"bad box size {size} at {at}"
        boxes.append(kind.decode("latin-1"))
        at += size
    assert at == len(data), "trailing bytes after the last box"
    return boxes


def probe(path: Path) -> dict:
    """What a player sees: codec, pixel format, size, declared and decoded frame counts, duration."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        decoded = [f.to_ndarray(format="bgr24") for f in container.decode(stream)]
        assert stream.duration is not None and stream.time_base is not None
        return {"codec": ctx.name, "pix_fmt": ctx.pix_fmt, "size": (ctx.width, ctx.height), "frames": stream.frames,
                "decoded": decoded, "duration": float(stream.duration * stream.time_base),
                "rate": stream.average_rate}


def numbered(i: int, width: int = 64, height: int = 48) -> np.ndarray:
    """A frame whose brightness encodes its index (and a bright right column, to see the edge)."""
    img = np.full((height, width, 3), 10 + 8 * (i % 25), np.uint8)
    img[:, -1] = 250
    return img


def test_a_file_is_browser_playable_h264_with_the_index_first(tmp_path):
    path = tmp_path / "cam-run.mp4"
    f = H264File(path, video_size(64, 48), video_rate(25.0))
    for i in range(12):
        f.write(numbered(i))
    assert not path.exists() and f.part.exists()  # until closed, only the .part
    assert f.close() == path and f.close() == path  # idempotent
    assert not f.part.exists()
    boxes = top_level_boxes(path)
    assert boxes[0] == "ftyp" and boxes.index("moov") < boxes.index("mdat"), boxes  # +faststart
    info = probe(path)
    assert (info["codec"], info["pix_fmt"], info["size"]) == ("h264", "yuv420p", (64, 48))
    assert info["frames"] == len(info["decoded"]) == 12
    assert info["duration"] == pytest.approx(12 / 25)
    # Frame order and content survive (flat patches survive the lossy coding within a few levels).
    marks = [int(img[8:40, 8:40].mean()) for img in info["decoded"]]
    assert all(abs(m - (10 + 8 * i)) <= 3 for i, m in enumerate(marks)), marks


@pytest.mark.parametrize(("width", "height"), [(321, 241), (64, 47), (3, 3)])
def test_odd_sides_are_padded_with_the_edge(tmp_path, width, height):
    size = video_size(width, height)
    assert size == (width + width % 2, height + height % 2)
    path = H264File(tmp_path / "odd.mp4", size, video_rate(30.0))
    for i in range(3):
        path.write(numbered(i, width, height))
    info = probe(path.close())
    assert info["size"] == size and len(info["decoded"]) == 3
    if width >= 16:  # the added column repeats the bright edge rather than adding a dark line
        assert info["decoded"][0][:, -1].mean() > 200


@pytest.mark.parametrize(("fps", "rate"), [(30000 / 1001, Fraction(30000, 1001)), (29.97, Fraction(2997, 100)),
                                           (530.416, Fraction(66302, 125)), (1e-5, Fraction(1)),
                                           (5000.0, Fraction(1000))])
def test_odd_frame_rates_keep_their_timing(tmp_path, fps, rate):
    assert video_rate(fps) == rate
    f = H264File(tmp_path / "rate.mp4", (32, 32), video_rate(fps))
    for i in range(30):
        f.write(numbered(i, 32, 32))
    info = probe(f.close())
    assert info["frames"] == len(info["decoded"]) == 30
    assert info["duration"] == pytest.approx(30 / rate, rel=1e-3)
    assert info["rate"] == pytest.approx(float(rate), rel=1e-3)


def test_a_frame_of_another_size_is_scaled_to_the_file(tmp_path):
    f = H264File(tmp_path / "resize.mp4", video_size(64, 48), video_rate(10))
    f.write(numbered(0))
    f.write(numbered(1, 128, 96))
    info = probe(f.close())
    assert info["size"] == (64, 48) and len(info["decoded"]) == 2


def test_huge_frames_are_fitted_within_players_limits():
    assert video_size(596, 8400) == (292, 4096)
    assert video_size(8000, 100) == (4096, 52)


def test_segments_rotate_every_n_seconds_of_video_each_playable(tmp_path):
    rec = VideoRecorder(tmp_path, "cam-r1", fps=10, segment_s=1.0)
    finished = [rec.write(numbered(i)) for i in range(25)]
    assert [p.name for p in finished if p is not None] == ["cam-r1-001.mp4", "cam-r1-002.mp4"]
    assert finished.index(tmp_path / "cam-r1-001.mp4") == 10  # the 11th frame starts the second file
    assert rec.close() == tmp_path / "cam-r1-003.mp4" and rec.close() is None
    assert rec.written == sorted(tmp_path.glob("*.mp4"))  # the names sort in order
    counts = []
    for path in rec.written:
        info = probe(path)
        assert (info["codec"], info["pix_fmt"]) == ("h264", "yuv420p")
        boxes = top_level_boxes(path)
        assert boxes.index("moov") < boxes.index("mdat")
        counts.append(len(info["decoded"]))
    assert counts == [10, 10, 5]
    # Each segment starts at its own time 0 and holds its frames in order.
    first = [int(img[8:40, 8:40].mean()) for img in probe(rec.written[1])["decoded"]]
    assert all(abs(m - (10 + 8 * (10 + i))) <= 3 for i, m in enumerate(first)), first


def test_finished_files_are_never_overwritten(tmp_path):
    (tmp_path / "cam-r1.mp4").write_bytes(b"an earlier process's video")
    (tmp_path / "cam-r1-2.mp4.part").write_bytes(b"a killed writer's remains")
    rec = VideoRecorder(tmp_path, "cam-r1", fps=10)
    rec.write(numbered(0))
    assert rec.close() == tmp_path / "cam-r1-2.mp4"  # the .part of a killed writer is taken over
    rec.write(numbered(1))
    assert rec.close() == tmp_path / "cam-r1-3.mp4"  # the camera back in the same run
    assert (tmp_path / "cam-r1.mp4").read_bytes() == b"an earlier process's video"
    assert len(probe(tmp_path / "cam-r1-2.mp4")["decoded"]) == 1

    (tmp_path / "seg-001.mp4").write_bytes(b"x")
    seg = VideoRecorder(tmp_path, "seg", fps=10, segment_s=60)
    seg.write(numbered(0))
    assert seg.close() == tmp_path / "seg-002.mp4"


def test_an_unwritable_folder_is_one_readable_error(tmp_path):
    from fer_pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot write video"):
        H264File(tmp_path / "missing" / "cam.mp4", (32, 32), video_rate(30))
