"""The producer role: per camera, source -> detect -> crop -> track -> publish.

Each camera runs in its own thread (OpenCV releases the GIL while decoding and
detecting), so one slow or failing camera never holds up another. Capture never blocks
on the pipeline: cameras hand their messages to the producer's one publisher thread
(``publisher.py``, which shares round trips among them), and when the crops backlog is too
deep, or Redis is down, the frame's crops are dropped and counted instead of queued.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from fer_pipeline.errors import ConfigError, SourceError
from fer_pipeline.messages import MAX_FACES, MAX_FPS, EndOfStream, FaceCrop, Frame
from fer_pipeline.producers.detection import Detector
from fer_pipeline.producers.faces import FaceFinder
from fer_pipeline.producers.publisher import SENT_NAMES, Outgoing, Publisher
from fer_pipeline.producers.sources import CapturedFrame, Source, open_source
from fer_pipeline.run_ids import new_run_id, restarted
from fer_pipeline.service import REDIS_DOWN, Service
from fer_pipeline.settings import Settings
from fer_pipeline.transport import Transport

BACKLOG_CHECK_S = 0.1  # the crops backlog is polled at most this often, shared by all cameras
GAUGE_WAIT_S = 0.05  # longest a camera waits for an in-flight publish before reading the backlog
REGISTER_EVERY_S = 1.0  # re-announce the cameras set this often (one SADD)
JOIN_TIMEOUT_S = 10.0  # live reads can block up to the FFmpeg read timeout
CAMERA_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
# Per-camera counters, summed into the service's counters for heartbeats and progress.
STAT_NAMES = ("frames", "faces", *SENT_NAMES)  # crops_dropped: by the camera (backlog) and the publisher

Item = tuple[np.ndarray, tuple[int, int, int, int], int, str | None]  # pixels, box, track id, truth


class BacklogGauge:
    """The workers' backlog: the crops the crops stream holds (its depth: the workers
    XACK+XDEL, so it is the backlog; sharded, the fullest shard's), cached for ``interval_s`` so many cameras at 30 fps cost a few Redis calls per
    second, plus the crops still queued in the publisher."""

    def __init__(self, transport: Transport, publisher: Publisher, interval_s: float = BACKLOG_CHECK_S) -> None:
        self._transport = transport
        self._publisher = publisher
        self._interval = interval_s
        self._lock = threading.Lock()
        self._checked = -float("inf")
        self._depth = 0

    def depth(self) -> int:
        with self._lock:
            now = time.monotonic()
            # Read the depth when no batch is in flight, so none of its crops is counted both in Redis
            # and in the queue; a round trip takes well under a millisecond, but a hung Redis
            # must not stall every camera's capture: then the last reading serves.
            if now - self._checked >= self._interval and self._publisher.sending.acquire(timeout=GAUGE_WAIT_S):
                try:
                    self._refresh(now)
                finally:
                    self._publisher.sending.release()
            return self._depth + self._publisher.queued_crops

    def _refresh(self, now: float) -> None:
        self._checked = now  # set first: a Redis error must not trigger a retry per frame
        # On an outage keep the last reading; the publisher sees the outage and backs off.
        with contextlib.suppress(*REDIS_DOWN):
            keys = self._transport.keys
            self._depth = max(self._transport.lengths(keys.crops_shards).values())


class CameraProducer:
    """One camera's loop. ``run()`` is a thread target and never raises: errors end this
    camera only (``state`` becomes "failed", ``error`` says why)."""

    def __init__(self, camera_id: str, source: Source, settings: Settings, transport: Transport, *,
                 run_id: str, stop: threading.Event, backlog: BacklogGauge, publisher: Publisher,
                 detector_factory: Callable[[], Detector] | None = None) -> None:
        import logging

        self.camera_id = camera_id
        self.source = source
        self.settings = settings
        self.transport = transport
        self.run_id = run_id
        self.stop = stop
        self.backlog = backlog
        self.publisher = publisher
        self.stats: Counter[str] = Counter({name: 0 for name in STAT_NAMES})
        self.state = "idle"
        self.error: str | None = None
        self.log = logging.getLogger(f"fer.producer.{camera_id}")
        self._finder = FaceFinder(settings.producer, detector_factory)

    @property
    def detect_ms(self) -> float:
        """Milliseconds (wall clock) this camera has spent in face detection."""
        return self._finder.detect_ms

    @property
    def detect_cpu_ms(self) -> float:
        """CPU milliseconds of this camera's thread in face detection (wall time grows with
        the machine's load; this is the cost)."""
        return self._finder.detect_cpu_ms

    # -- thread ------------------------------------------------------------------------
    def run(self) -> None:
        self.state = "running"
        self.log.info("camera %s: %s source at %.2f fps (%s)", self.camera_id, self.source.kind,
                      self.source.fps, "finite" if self.source.finite else "live")
        try:
            if self.source.kind != "replay":  # replays carry their faces; others need the detector
                # Loaded before the first frame is stamped, or a file camera starts behind
                # real time by the model's load time and never catches up.
                self._finder.detector  # noqa: B018
            for frame in self.source.frames(self.stop):
                self.process(frame)
                if self.stop.is_set():
                    break
            self.state = "ended"
        except Exception as e:  # noqa: BLE001 - one broken camera must not take the others down
            self.state, self.error = "failed", f"{type(e).__name__}: {e}"
            self.log.exception("camera %s failed; ending it", self.camera_id)
        finally:
            self._end_of_stream()
            self.log.info("camera %s %s: %s", self.camera_id, self.state, dict(self.stats))

    # -- one frame -----------------------------------------------------------------------
    def process(self, frame: CapturedFrame) -> None:
        """Detect (or take the source's crops), then hand the crops and the display frame to
        the publisher; never waits on Redis."""
        self.stats["frames"] += 1
        items = self._faces(frame)[:MAX_FACES]
        self.stats["faces"] += len(items)
        if not self.publisher.accepting():  # Redis was down moments ago: skip the encoding too
            self.stats["crops_dropped"] += len(items)
            self.stats["frames_dropped"] += self.settings.producer.publish_frames
            return
        crops = self._crop_payloads(frame, items)
        display = self._frame_payload(frame, len(crops)) if self.settings.producer.publish_frames else None
        if crops or display is not None:
            self.publisher.submit(Outgoing(self.camera_id, crops, display))

    def _faces(self, frame: CapturedFrame) -> list[Item]:
        if frame.crops is not None:  # a labelled replay: the faces are given
            return [(c.pixels, c.box, c.track_id, c.truth) for c in frame.crops]
        return [(f.crop, f.box, f.track_id, None) for f in self._finder.find(frame.image)]

    def _crop_payloads(self, frame: CapturedFrame, items: Sequence[Item]) -> list[bytes]:
        if not items:
            return []
        if self.backlog.depth() > self.settings.streams.max_crop_backlog:
            self.stats["crops_dropped"] += len(items)
            return []
        now = time.time()
        return [
            FaceCrop.pack(pixels, camera_id=self.camera_id, run_id=self.run_id, frame_index=frame.index,
                          face_index=i, faces_in_frame=len(items), track_id=tid, bbox=box,
                          captured_at=frame.captured_at, published_at=now, truth=truth,
                          position_s=frame.position_s)
            for i, (pixels, box, tid, truth) in enumerate(items)
        ]

    def _frame_payload(self, frame: CapturedFrame, faces: int) -> bytes:
        import cv2

        p = self.settings.producer
        image = frame.image
        h, w = image.shape[:2]
        scale = min(1.0, p.frame_max_width / w)
        if scale < 1.0:
            image = cv2.resize(image, (p.frame_max_width, max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, p.frame_jpeg_quality])
        if not ok:
            raise SourceError(f"camera {self.camera_id}: JPEG encoding failed for frame {frame.index}")
        return Frame(camera_id=self.camera_id, run_id=self.run_id, frame_index=frame.index,
                     captured_at=frame.captured_at, faces=faces, scale=scale, fps=_frame_rate(self.source.fps),
                     jpeg=jpeg.tobytes()).encode()

    def _end_of_stream(self) -> None:
        # Sent however the camera ended (source over, stop requested, error) so the display
        # can close this camera's video cleanly; after this camera's last frame has gone out,
        # so that it carries the final count of crops published.
        if not self.settings.producer.publish_frames:
            return
        if not self.publisher.drain(self.camera_id, JOIN_TIMEOUT_S / 2):
            self.log.warning("camera %s: frames still unsent after %.0fs", self.camera_id, JOIN_TIMEOUT_S / 2)
        msg = EndOfStream(camera_id=self.camera_id, run_id=self.run_id, frames=self.stats["frames"],
                          crops=self.publisher.counts(self.camera_id)["crops_published"], ended_at=time.time())
        if not self.publisher.submit(Outgoing(self.camera_id, display=msg.encode())):
            self.log.warning("camera %s: end of stream not published (Redis unreachable)", self.camera_id)


def _frame_rate(fps: float) -> float:
    """The source's frame rate as a Frame carries it: 0 (unknown) when a container reports
    something no camera does (0, negative, NaN, 90,000)."""
    return fps if 0.0 < fps <= MAX_FPS else 0.0


class ProducerService(Service):
    """Runs one or more cameras until every finite source ends or a stop is requested."""

    role = "producer"

    def __init__(self, settings: Settings, transport: Transport, sources: Sequence[tuple[str, Source]],
                 ident: str | None = None, *, detector_factory: Callable[[], Detector] | None = None) -> None:
        super().__init__(settings, transport, ident)
        if not sources:
            raise ConfigError("no sources given to the producer")
        self.run_id = self._run_id(settings, transport, [cid for cid, _ in sources])
        self.publisher = Publisher(transport, settings, [cid for cid, _ in sources])
        backlog = BacklogGauge(transport, self.publisher)
        self.cameras = [
            CameraProducer(cid, src, settings, transport, run_id=self.run_id, stop=self.stop_event,
                           backlog=backlog, publisher=self.publisher, detector_factory=detector_factory)
            for cid, src in sources
        ]
        self._threads: list[threading.Thread] = []
        self._next_register = 0.0

    def _run_id(self, settings: Settings, transport: Transport, camera_ids: list[str]) -> str:
        """A new run id, or the one the settings give: then a camera's second start under it (a
        restart by compose or by hand) continues as ``<run>~<n>``. Its frame numbers start
        again, and the same run id would repeat the first start's crop ids, which the log
        takes for duplicates and drops. The cameras of one `up` share its run id, each started
        once; `up` names its restarts itself, and each of those is a first."""
        given = settings.producer.run_id
        if not given:
            return new_run_id()
        try:
            starts = transport.claim_run_start(given, camera_ids)
        except REDIS_DOWN:
            self.log.warning("could not count this start of run %s (Redis down): using it as given", given)
            return given
        return given if starts <= 1 else restarted(given, starts - 1)

    def _register(self) -> None:
        """Announce the cameras (display consumers find frame streams in this set); repeated
        every few seconds because a Redis restart without persistence forgets the set, and a
        display started after it would never find these cameras."""
        now = time.monotonic()
        if now >= self._next_register:
            self.transport.add_cameras(c.camera_id for c in self.cameras)
            self._next_register = now + REGISTER_EVERY_S

    def on_redis_down(self) -> None:
        self._next_register = 0.0  # Redis may come back empty: announce again as soon as it is up

    def setup(self) -> None:
        self._register()
        if not self._threads:
            if self.settings.producer.opencv_threads:
                import cv2

                cv2.setNumThreads(self.settings.producer.opencv_threads)
            self.publisher.start()
            self.log.info("producer run %s: %d camera(s): %s", self.run_id, len(self.cameras),
                          ", ".join(c.camera_id for c in self.cameras))
            for cam in self.cameras:
                t = threading.Thread(target=cam.run, name=f"camera-{cam.camera_id}", daemon=True)
                self._threads.append(t)
                t.start()

    def step(self) -> None:
        self.stop_event.wait(min(self.settings.streams.block_ms, 200) / 1000)
        self._register()
        if not any(t.is_alive() for t in self._threads):
            self.request_stop()

    def finish(self) -> None:
        self.request_stop()
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                self.log.warning("%s did not stop within %.0fs; abandoning it", t.name, JOIN_TIMEOUT_S)
        for cam in self.cameras:
            cam.source.close()
        self.publisher.close(JOIN_TIMEOUT_S)
        self._collect()
        self.log.info("producer run %s finished: %s", self.run_id, dict(self.counters))

    def run(self) -> int:
        """Run until done; exit code 1 when some camera ended with an error."""
        code = super().run()
        failed = [c for c in self.cameras if c.state == "failed"]
        for cam in failed:
            self.log.error("camera %s failed: %s", cam.camera_id, cam.error)
        return 1 if failed else code

    def info(self) -> dict[str, str | int | float]:
        self._collect()
        running = sum(c.state == "running" for c in self.cameras)
        return {**self.counters, "cameras": len(self.cameras), "cameras_running": running, "run_id": self.run_id,
                "camera_ids": json.dumps([c.camera_id for c in self.cameras])}

    def _collect(self) -> None:
        """Sum the per-camera counters into ``self.counters`` (one writer thread each)."""
        totals: Counter[str] = Counter({name: 0 for name in STAT_NAMES})
        for cam in self.cameras:
            totals.update(dict(cam.stats))
            totals.update(self.publisher.counts(cam.camera_id))
            totals["source_reconnects"] += cam.source.stats["reconnects"]
            totals["images_skipped"] += cam.source.stats["skipped"]
            totals["stale_frames_skipped"] += cam.source.stats["stale_skipped"]
            totals["realtime_lost_ms"] += cam.source.stats["realtime_lost_ms"]
        for key, value in totals.items():
            self.counters[key] = value
        self.counters["detect_ms"] = round(sum(c.detect_ms for c in self.cameras), 1)
        self.counters["detect_cpu_ms"] = round(sum(c.detect_cpu_ms for c in self.cameras), 1)


def camera_ids_for(sources: Sequence[Source], explicit: Sequence[str] | None) -> list[str]:
    """Explicit ids (validated, unique) or ids derived from the sources (made unique with -2, -3...)."""
    if explicit:
        if len(explicit) != len(sources):
            raise ConfigError(f"{len(explicit)} camera id(s) for {len(sources)} source(s): give one per source")
        for cid in explicit:
            if not CAMERA_ID.match(cid):
                raise ConfigError(f"camera id {cid!r} must be 1-128 letters, digits, '.', '_' or '-'")
        dupes = sorted({c for c in explicit if list(explicit).count(c) > 1})
        if dupes:
            raise ConfigError(f"camera id {dupes[0]!r} is given more than once")
        return list(explicit)
    ids: list[str] = []
    for src in sources:
        cid, n = src.name, 2
        while cid in ids:
            cid, n = f"{src.name}-{n}", n + 1
        ids.append(cid)
    return ids


def build_producer_service(settings: Settings, transport: Transport, specs: Sequence[str],
                           camera_ids: Sequence[str] | None = None, *, ident: str | None = None) -> ProducerService:
    """Open every source and build the service (not started).

    Args:
        settings: The one settings object.
        transport: Connected transport.
        specs: Source specs, see ``open_source``; at least one.
        camera_ids: Optional explicit camera ids, one per spec.
        ident: Process identity for heartbeats (default host-pid).

    Returns:
        The service; call ``install_signal_handlers()`` then ``run()`` (its exit code).

    Raises:
        SourceError: a source cannot be opened (every source opened so far is closed).
        ConfigError: no specs, or bad/duplicate camera ids.
    """
    if not specs:
        raise ConfigError("give at least one source (a webcam index such as 0, a video file, a URL, ...)")
    if camera_ids and len(camera_ids) != len(specs):
        raise ConfigError(f"{len(camera_ids)} camera id(s) for {len(specs)} source(s): give one per source")
    opened: list[Source] = []
    try:
        for spec in specs:
            opened.append(open_source(spec, settings))
        ids = camera_ids_for(opened, camera_ids)
    except BaseException:
        for src in opened:
            src.close()
        raise
    return ProducerService(settings, transport, list(zip(ids, opened)), ident)
