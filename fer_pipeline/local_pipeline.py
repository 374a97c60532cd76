"""The whole pipeline for a program that wants its labels: ``Pipeline(sources, on_label=...)``.

What ``fer-pipeline up`` runs, minus the display and the logger: an embedded Redis (unless a
``redis_url`` is given), one producer process per source and the inference workers, as
child processes of this one (``supervisor.Supervisor``: the same commands, restarted when
they crash, stopped in order). The labels come back through a consumer group of the
pipeline's own on the labels stream (``label_reader.LabelReader``, ``noack``: only a position
Redis keeps), read by a thread of this process, which calls ``on_label`` for each one, in the
order the workers published them. The group is deleted at stop (a process killed with -9
leaves it behind on a given Redis: ``XGROUP DESTROY <prefix>:labels pipeline-...``).

A failing ``on_label`` stops the pipeline: ``run()`` (or ``stop()``, or leaving the
``with`` block) raises its exception after the children are stopped. Labels are never
skipped without the program knowing: the labels stream keeps ``streams.labels_maxlen``
labels, and an ``on_label`` slower than the workers for that long lets Redis trim labels the
group has not read yet; Redis counts them (the trim's ``trimmed_unread`` accounting counts an
entry trimmed before every group of the stream read it), and the pipeline stops with a
``PipelineError`` saying how many. On a Redis shared with a deployment under the same
prefix, labels trimmed before one of its own groups (a display's, the logger's) read them
count too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from fer_pipeline.api_settings import api_settings
from fer_pipeline.errors import ConfigError, FerError
from fer_pipeline.messages import Label
from fer_pipeline.redis_compat import UNAVAILABLE
from fer_pipeline.settings import Settings, shipped_path
from fer_pipeline.streams import entry_order

__all__ = ["Pipeline", "PipelineError"]

log = logging.getLogger("fer.pipeline")
DEMO = "demo"  # the source name of the shipped demo clip, as on the command line
CATCH_UP_IDLE_S = 30.0  # after the workers stop, how long the reader may go without progress


class PipelineError(FerError):
    """A role of the pipeline kept crashing, or the labels could not all be delivered."""


class Pipeline:
    """Producers and workers for ``sources``, labels delivered to ``on_label`` in this process.

    Args:
        sources: One source or several, as ``fer-pipeline up --source`` takes them: a video
            file, an image folder, a webcam index (``0``), an ``rtsp://``/``http://`` stream,
            or ``"demo"`` (the shipped clip).
        on_label: Called with each ``fer_pipeline.messages.Label``, from one thread of this
            process (one call at a time). An exception stops the pipeline (see the module).
        camera_ids: One id per source (default: derived from each source).
        workers: Inference worker processes.
        redis_url: Use this Redis instead of starting an embedded one.
        prefix: Key prefix of the streams. With the embedded broker, a fresh one per
            pipeline; with a given Redis, the settings' (``fer``): the pipeline then joins
            whatever deployment runs there under that prefix (its workers label that
            deployment's crops too, and ``on_label`` gets its labels); pass a prefix of its
            own to keep it apart (``settings.redis.prefix`` says which it took).
        realtime: Read files at their frame rate (True) or as fast as possible (False,
            ``up --fast``); None: the settings' (``FER_PRODUCER__REALTIME``, True).
        detector: Face detector name; None: the settings'.
        detect_every: Detect every Nth frame; None: the settings' (3).
        model: ``model.json`` for the workers; None: the shipped model.
        log_dir: Where the children's logs go (default: a temporary folder, removed at stop).
        settings: Every other knob, as the CLI reads them (``FER_*``) by default.

    Raises:
        ConfigError: no source, a camera id too many or too few, a bad setting.
    """

    def __init__(self, sources: str | int | Sequence[str | int], on_label: Callable[[Label], Any], *,
                 camera_ids: Sequence[str] | None = None, workers: int = 1, redis_url: str | None = None,
                 prefix: str | None = None, realtime: bool | None = None, detector: str | None = None,
                 detect_every: int | None = None, model: str | PathLike | None = None,
                 log_dir: str | PathLike | None = None, settings: Settings | None = None) -> None:
        specs = [sources] if isinstance(sources, (str, int)) else list(sources)
        self.sources = [str(shipped_path("demo") / "short_hamilton_clip.mp4") if s == DEMO else str(s)
                        for s in specs]
        if not self.sources:
            raise ConfigError("a Pipeline needs at least one source")
        if camera_ids is not None and len(camera_ids) != len(self.sources):
            raise ConfigError(f"{len(camera_ids)} camera ids for {len(self.sources)} sources: give one per source")
        if workers < 1:
            raise ConfigError(f"a Pipeline needs at least one worker, got {workers}")
        self.on_label = on_label
        self.camera_ids = list(camera_ids) if camera_ids is not None else None
        self.workers = workers
        s = api_settings(settings)
        if prefix is None and redis_url is None and s.redis.url is None:
            prefix = f"fer-{uuid.uuid4().hex[:8]}"
        # No display reads the frames: producers do not encode them.
        self.settings = api_settings(
            s,
            redis={"url": redis_url, "prefix": prefix},
            producer={"realtime": realtime, "detector": detector, "detect_every": detect_every,
                      "publish_frames": False},
            worker={"model": Path(model) if model is not None else None})
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._broker: Any = None
        self._sup: Any = None
        self._reader: Any = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self.delivered = 0
        self._trimmed_before = 0
        self._start_id = "0-0"
        self.started = False
        self.stopped = False

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> Pipeline:
        """Start the broker (if embedded), the children and the label thread; returns at once.

        Call it from a thread that lives as long as the pipeline: the embedded Redis is tied
        to the thread that starts it and ends with it (so that no server outlives a crash).

        Raises:
            SourceError: a source cannot be opened (nothing is left running).
            ModelError: the model is missing or disagrees with its metadata.
            BrokerUnavailable: Redis cannot be started or reached.
        """
        from fer_pipeline.model import read_info
        from fer_pipeline.producers.sources import open_source

        if self.started:
            return self
        s = self.settings
        read_info(s.worker.model)  # a missing model is one line now, not a crashing child later
        for spec in self.sources:
            open_source(spec, s).close()
        self.started = True
        try:
            self._start(s)
        except BaseException:
            self._shutdown(drain=False)
            raise
        return self

    def _trimmed_unread(self) -> int:
        """Labels trimmed from the labels stream before every group read them, so far."""
        t = self._sup.transport
        return t.stats().get(f"trimmed_unread:{t.keys.labels}", 0)

    def _start(self, s: Settings) -> None:
        from fer_pipeline.broker import EmbeddedBroker
        from fer_pipeline.label_reader import LabelReader
        from fer_pipeline.supervisor import Supervisor
        from fer_pipeline.transport import Transport

        if s.redis.url is None:
            self._broker = EmbeddedBroker.start()
            s = self.settings = s.with_updates(redis={"url": self._broker.url})
        if self._log_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="fer-pipeline-logs-")
            self._log_dir = Path(self._tmp.name)
        # The group starts at the stream's end now, before any producer runs: every label of
        # this run comes after it, and none of an earlier run on a shared Redis. A group (not a
        # tail) so that Redis counts the labels trimmed before this pipeline read them.
        tag = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
        self._reader = LabelReader(settings=s, group=f"pipeline-{tag}", consumer="pipeline", start="latest",
                                   noack=True)
        sup = self._sup = Supervisor(s, Transport.connect(s), self._log_dir)
        self._trimmed_before = self._trimmed_unread()
        newest = sup.transport.entries(sup.transport.keys.labels, count=1, newest=True)
        self._start_id = newest[-1].id if newest else "0-0"  # labels up to it are not this run's
        sup.add_workers(self.workers, f"pipeline-{tag}-worker")
        sup.add_producers(self.sources, self.camera_ids)
        self._thread = threading.Thread(target=self._deliver, name="fer-pipeline-labels", daemon=True)
        self._thread.start()
        sup.start()

    def run(self) -> int:
        """Start (if not yet), block until every source has ended and every label has been
        delivered, then stop; returns the number of labels delivered. Live sources never
        end: stop those with ``stop()`` from another thread, or Ctrl-C (KeyboardInterrupt,
        re-raised after an immediate stop).

        Raises:
            Exception: whatever ``on_label`` raised (the pipeline is stopped first).
            PipelineError: a child kept crashing.
        """
        self.start()
        try:
            while not self.stopped and not self._failed() and not self._sup.producers_done():
                time.sleep(0.2)
        except BaseException:
            self._shutdown(drain=False)
            raise
        self.stop(drain=self._error is None)
        return self.delivered

    def stop(self, drain: bool = True) -> None:
        """Stop everything: with ``drain``, the producers first, then the workers once the
        crops are labelled, then the label thread once it has delivered every label; without,
        at once. Idempotent.

        Raises:
            Exception: whatever ``on_label`` raised.
            PipelineError: a child kept crashing, or (``drain``) labels were left undelivered.
        """
        self._shutdown(drain=drain)
        self._raise()

    def __enter__(self) -> Pipeline:
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._shutdown(drain=False)
            return
        self.stop()

    # -- pieces -----------------------------------------------------------------------------------
    def _deliver(self) -> None:
        reader = self._reader
        labels = iter(reader)
        while True:
            try:
                label = next(labels)
            except StopIteration:
                return
            except BaseException as e:  # noqa: BLE001 - handed to run()/stop(), which re-raise it
                # The reader's own failure (Redis refused the credentials, a bug), not the callback's.
                self._fail(e, f"reading the labels failed ({type(e).__name__}: {e})")
                return
            try:
                self.on_label(label)
            except BaseException as e:  # noqa: BLE001 - handed to run()/stop(), which re-raise it
                self._fail(e, f"on_label raised {type(e).__name__}")
                return
            self.delivered += 1

    def _fail(self, e: BaseException, what: str) -> None:
        with self._lock:
            self._error = self._error or e
        self._reader.stop()
        log.error("%s: stopping the pipeline", what)

    def _check_trimmed(self) -> bool:
        """Whether labels were trimmed before this pipeline read them (then it is an error)."""
        lost = self._trimmed_unread() - self._trimmed_before
        if lost <= 0:
            return False
        with self._lock:
            self._error = self._error or PipelineError(
                f"{lost} labels were trimmed from {self._reader.stream} before on_label got them: on_label "
                f"is slower than the workers publish, and the stream keeps {self.settings.streams.labels_maxlen} "
                f"(FER_STREAMS__LABELS_MAXLEN); on_label got {self.delivered}")
        return True

    def _failed(self) -> bool:
        if self._error is not None or self._check_trimmed():
            return True
        given_up = self._sup.restart_crashed()
        if given_up:
            c = given_up[0]
            with self._lock:
                if self._error is None:
                    self._error = PipelineError(f"{c.name} kept crashing (exit {c.returncode}): {c.log_tail()}")
            return True
        return False

    def _shutdown(self, drain: bool) -> None:
        with self._lock:
            if self.stopped:
                return
            self.stopped = True
        try:
            if self._sup is not None:
                self._sup.stop(drain=drain)
                if drain and self._error is None:
                    self._catch_up()
        finally:
            if self._reader is not None:
                self._reader.stop()  # the thread still hands over the rest of its last read
            if self._thread is not None:
                # Drained: every label read is delivered, however slow on_label is. Otherwise a
                # callback that hangs must not hang the stop (the thread is a daemon).
                self._thread.join(timeout=None if drain and self._error is None else 10)
            if self._reader is not None:
                self._reader.close()
                if self._sup is not None:
                    with contextlib.suppress(*UNAVAILABLE):
                        if drain and self._error is None:
                            self._check_trimmed()  # the last labels, trimmed while on_label caught up
                        self._sup.transport.drop_group(self._reader.stream, self._reader.group)
            if self._sup is not None:
                self._sup.transport.close()
            if self._broker is not None:
                self._broker.stop()
            if self._tmp is not None:
                with contextlib.suppress(OSError):
                    self._tmp.cleanup()

    def _catch_up(self) -> None:
        """Wait until the label thread has read the last label the workers published."""
        newest = self._sup.transport.entries(self._sup.transport.keys.labels, count=1, newest=True)
        if not newest or entry_order(newest[-1].id) <= entry_order(self._start_id):
            return  # no label of this run
        last = entry_order(newest[-1].id)
        seen, since = self._reader.position, time.monotonic()
        while entry_order(self._reader.position) < last and self._error is None:
            if self._reader.position != seen:
                seen, since = self._reader.position, time.monotonic()
            elif time.monotonic() - since > CATCH_UP_IDLE_S or not self._thread or not self._thread.is_alive():
                with self._lock:
                    self._error = self._error or PipelineError(
                        f"labels left undelivered: on_label got {self.delivered} (the last read was "
                        f"{self._reader.position}, the stream ends at {newest[-1].id})")
                return
            time.sleep(0.05)

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error
