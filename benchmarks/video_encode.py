"""What the display's video files cost: H.264 (PyAV libx264, ``consumers/video.py``) against
the OpenCV mp4v writer it replaced, per 640x480 frame.

    python -m benchmarks.video_encode [--frames 300] [--cameras 4]

Frames are the shipped demo clip scaled to 640x480 (real picture content: x264's cost
depends on it). Each cell writes ``--frames`` frames to each of ``--cameras`` files,
interleaved as the display writes them (one frame per camera in turn, on one thread), and
reports wall and CPU milliseconds per frame (CPU includes x264's own threads), the file
size per second of video at 30 fps, and how many frames per second of all cameras
together one display could write on this machine at that wall cost. Writes
``benchmarks/results/video_encode.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import finish, machine_info, section, table  # noqa: E402

SIZE = (640, 480)
FPS = 30.0


def load_frames(n: int) -> list:
    import cv2

    from fer_pipeline.settings import shipped_path

    cap = cv2.VideoCapture(str(shipped_path("demo") / "short_hamilton_clip.mp4"))
    frames = []
    while len(frames) < n:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(cv2.resize(image, SIZE, interpolation=cv2.INTER_AREA))
    cap.release()
    if not frames:
        raise FileNotFoundError("the shipped demo clip cannot be read")
    return [frames[i % len(frames)] for i in range(n)]


def _writers(kind: str, folder: Path, cameras: int, preset: str, threads: int) -> list:
    import cv2

    from fer_pipeline.consumers.video import H264File, video_rate

    if kind == "mp4v":
        out = []
        for c in range(cameras):
            w = cv2.VideoWriter(str(folder / f"{c}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
            out.append((w.write, w.release, folder / f"{c}.mp4"))
        return out
    files = [H264File(folder / f"{c}.mp4", SIZE, video_rate(FPS), preset=preset, threads=threads)
             for c in range(cameras)]
    return [(f.write, f.close, f.path) for f in files]


def measure_cell(kind: str, frames: list, cameras: int, preset: str = "", threads: int = 0) -> dict:
    with tempfile.TemporaryDirectory(prefix="video-bench-") as tmp:
        writers = _writers(kind, Path(tmp), cameras, preset, threads)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for image in frames:
            for write, _, _ in writers:
                write(image)
        for _, close, _ in writers:
            close()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        total = len(frames) * cameras
        size = sum(p.stat().st_size for _, _, p in writers) / cameras
    return {"writer": kind if kind == "mp4v" else f"x264 {preset}", "threads": "-" if kind == "mp4v" else
            (threads or "auto"), "cameras": cameras, "wall_ms_per_frame": 1000 * wall / total,
            "cpu_ms_per_frame": 1000 * cpu / total, "kbit_per_s": size * 8 / 1000 / (len(frames) / FPS),
            "max_fps_all_cameras": total / wall}


def run(*, frames: int = 300, cameras: int = 4, out_dir: Path | None = None) -> dict:
    images = load_frames(frames)
    cells = [measure_cell("mp4v", images, cameras)]
    for preset in ("ultrafast", "superfast", "veryfast"):
        for threads in (1, 0):
            cells.append(measure_cell("x264", images, cameras, preset, threads))
    section(f"{cameras} cameras, {frames} frames each, {SIZE[0]}x{SIZE[1]}")
    print(table(["writer", "threads", "wall ms/frame", "CPU ms/frame", "kbit/s at 30 fps", "fps, all cameras"],
                [[c["writer"], c["threads"], c["wall_ms_per_frame"], c["cpu_ms_per_frame"], c["kbit_per_s"],
                  c["max_fps_all_cameras"]] for c in cells], digits=2))
    from fer_pipeline.consumers.video import PRESET

    chosen = next(c for c in cells if c["writer"] == f"x264 {PRESET}" and c["threads"] == "auto")
    results = {"frames": frames, "cameras": cameras, "size": SIZE, "cells": cells,
               "headline": {"mp4v CPU ms/frame": cells[0]["cpu_ms_per_frame"],
                            f"x264 {PRESET} CPU ms/frame": chosen["cpu_ms_per_frame"],
                            f"x264 {PRESET} wall ms/frame": chosen["wall_ms_per_frame"],
                            f"x264 {PRESET} fps, all cameras": chosen["max_fps_all_cameras"],
                            "size x264/mp4v": chosen["kbit_per_s"] / cells[0]["kbit_per_s"]}}
    finish("video_encode", results, machine_info(), out_dir)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=300, help="frames per camera")
    ap.add_argument("--cameras", type=int, default=4, help="files written side by side")
    ap.add_argument("--out-dir", type=Path, help="where to write video_encode.json (default benchmarks/results)")
    a = ap.parse_args(argv)
    run(frames=a.frames, cameras=a.cameras, out_dir=a.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
