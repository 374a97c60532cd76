"""A live dashboard for the tests: the real app served by uvicorn on a free port, and a camera
that publishes real Frame and Label messages to the real Redis (tests/factories.py)."""

from __future__ import annotations

import socket
import threading
import time

from fer_pipeline.dashboard.app import create_app
from fer_pipeline.dashboard.serve import server
from tests.factories import make_frame, make_label

EMOTIONS = ("happy", "sad", "surprise", "neutral")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def publish(t, frame_index: int, *, camera: str = "door", tracks=(0, 1), now: float | None = None) -> None:
    """One frame of a camera and the labels of its faces, as producers and workers would."""
    now = time.time() if now is None else now
    t.add_cameras([camera])
    frame = make_frame(camera_id=camera, frame_index=frame_index, faces=len(tracks)).model_copy(
        update={"captured_at": now})
    t.publish(t.keys.frames(camera), [frame.encode()], maxlen=50)
    if tracks:
        labels = [make_label(camera_id=camera, frame_index=frame_index, face_index=k, faces_in_frame=len(tracks),
                             track_id=track, emotion=EMOTIONS[(frame_index // 20 + k) % len(EMOTIONS)],
                             captured_at=now, confidence=0.55 + 0.1 * k).encode() for k, track in enumerate(tracks)]
        t.publish(t.keys.labels, labels, maxlen=5000)


class Camera:
    """A camera at ``fps`` in its own thread; ``tracks`` (who is in view) and ``paused`` can
    change while it runs."""

    def __init__(self, transport, camera: str = "door", fps: float = 10.0, tracks=(0, 1)) -> None:
        self.transport, self.camera, self.fps, self.tracks = transport, camera, fps, tuple(tracks)
        self.paused = threading.Event()
        self.frames = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.paused.is_set():
                publish(self.transport, self.frames, camera=self.camera, tracks=self.tracks)
                self.frames += 1
            self._stop.wait(1.0 / self.fps)

    def __enter__(self) -> Camera:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class Server:
    """The dashboard app on 127.0.0.1:<free port>, served as the command serves it, in a thread."""

    def __init__(self, settings, transport) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings, transport)
        self.server = server(self.app, host="127.0.0.1", port=self.port)
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "the dashboard did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
