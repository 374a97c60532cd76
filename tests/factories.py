"""Builders for the messages consumer tests publish: labels, frames with real JPEGs, ends."""

from __future__ import annotations

import time

import cv2
import numpy as np

from fer_pipeline.labels import EMOTIONS
from fer_pipeline.messages import BBox, EndOfStream, FaceCrop, Frame, Label
from fer_pipeline.settings import shipped_path
from tests.conftest import make_crop_pixels


def probs_for(emotion: str, confidence: float = 0.8) -> np.ndarray:
    """A probability vector whose argmax is ``emotion`` with ``confidence``."""
    p = np.full(len(EMOTIONS), (1.0 - confidence) / (len(EMOTIONS) - 1))
    p[EMOTIONS.index(emotion)] = confidence
    return p


def make_label(*, camera_id: str = "cam0", run_id: str = "r1", frame_index: int = 0, face_index: int = 0,
               faces_in_frame: int = 1, track_id: int = 0, bbox: BBox | None = None, emotion: str = "happy",
               confidence: float = 0.8, captured_at: float | None = None, labelled_delay: float = 0.05,
               truth: str | None = None, position_s: float | None = None) -> Label:
    captured = 1_000.0 + frame_index / 30.0 if captured_at is None else captured_at
    crop = FaceCrop.from_pixels(
        make_crop_pixels(frame_index), camera_id=camera_id, run_id=run_id, frame_index=frame_index,
        face_index=face_index, faces_in_frame=faces_in_frame, track_id=track_id,
        bbox=bbox or BBox(x=40, y=30, w=60, h=60), captured_at=captured, published_at=captured + 0.01, truth=truth,
        position_s=position_s)
    label = Label.for_crop(crop, probs_for(emotion, confidence), model_id="m1", worker_id="w1",
                           inferred_at=captured + 0.02)
    # Fixed times keep latency assertions exact (for_crop stamps labelled_at with now).
    return label.model_copy(update={"labelled_at": captured + labelled_delay})


def scene(width: int = 160, height: int = 120, seed: int = 0) -> np.ndarray:
    """A synthetic BGR frame: a smooth gradient with a lighter 'face' blob."""
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([(x * 255 // width), (y * 255 // height), np.full_like(x, 90 + seed % 50)], axis=-1)
    img = np.ascontiguousarray(img, dtype=np.uint8)
    cv2.circle(img, (width // 2, height // 2), min(width, height) // 4, (200, 190, 180), -1)
    return img


def make_frame(*, camera_id: str = "cam0", run_id: str = "r1", frame_index: int = 0, faces: int = 1,
               scale: float = 1.0, fps: float = 30.0, image: np.ndarray | None = None) -> Frame:
    img = scene(seed=frame_index) if image is None else image
    ok, jpeg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return Frame(camera_id=camera_id, run_id=run_id, frame_index=frame_index, captured_at=1_000.0 + frame_index / fps,
                 faces=faces, scale=scale, fps=fps, jpeg=jpeg.tobytes())


def make_end(*, camera_id: str = "cam0", run_id: str = "r1", frames: int = 0, crops: int = 0) -> EndOfStream:
    return EndOfStream(camera_id=camera_id, run_id=run_id, frames=frames, crops=crops, ended_at=2_000.0)


def crop_payload(i: int, camera: str = "cam0", value: int | None = None) -> bytes:
    """A crop message's bytes: frame ``i`` of ``camera``, its pixels all ``value`` (default: from i)."""
    pixels = np.full((48, 48), (i * 37) % 256 if value is None else value, np.uint8)
    return FaceCrop.from_pixels(pixels, camera_id=camera, run_id="r", frame_index=i, face_index=0, faces_in_frame=1,
                                track_id=1, bbox=BBox(x=0, y=0, w=10, h=10), captured_at=time.time(),
                                published_at=time.time()).encode()


DEMO_CLIP = shipped_path("demo") / "short_hamilton_clip.mp4"


def demo_frames(wanted) -> dict[int, np.ndarray]:
    """The demo clip's frames with these indices, read in order (BGR, as OpenCV gives them)."""
    import cv2

    wanted = set(wanted)
    cap = cv2.VideoCapture(str(DEMO_CLIP))
    out, index = {}, 0
    try:
        while len(out) < len(wanted):
            ok, image = cap.read()
            assert ok, f"the demo clip ended before frame {max(wanted)}"
            if index in wanted:
                out[index] = image
            index += 1
    finally:
        cap.release()
    return out
