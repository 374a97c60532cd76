"""The loop every long-running role shares (frigate's process-per-role, arq's shutdown).

A ``Service`` repeats ``step()`` until asked to stop, then runs ``finish()`` (finish the
batch, ack, flush). Redis outages never crash it: connection errors are logged once per
outage and retried with capped exponential backoff, counted as ``reconnects``. The first
SIGINT/SIGTERM is a warm stop; a second one is a cold stop (KeyboardInterrupt).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections import Counter

import redis

from fer_pipeline import health, redis_compat
from fer_pipeline.backoff import Backoff
from fer_pipeline.errors import BrokerUnavailable
from fer_pipeline.settings import Settings
from fer_pipeline.transport import Transport
from fer_pipeline.urls import redact_url

# Waited out with backoff (down, restarting, full, read-only after a failover, busy): redis_compat.
REDIS_DOWN = redis_compat.UNAVAILABLE
# A ConnectionError subclass that no retry can fix (the password or ACL user changed under a
# running process): stop with one readable line; unacked work stays pending for the others.
REDIS_REFUSED = (redis.AuthenticationError,)
# Set by `up` for its children: the pid to outlive. When it is gone (even killed with -9), the
# child stops in order by itself rather than run on unsupervised.
PARENT_ENV = "FER_PARENT_PID"
HEARTBEAT_EVERY_S = 1.0
HEARTBEAT_TTL_S = 5.0


def default_ident() -> str:
    """The ident a process gets when none is given: ``<hostname>-<pid>``."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Service:
    """Base of every long-running role: the ``step`` loop, Redis outage retries, heartbeats and
    the warm/cold stop on signals. Subclasses set ``role`` and implement the hooks."""

    role = "service"

    def __init__(self, settings: Settings, transport: Transport, ident: str | None = None) -> None:
        self.settings = settings
        self.transport = transport
        self.ident = ident or default_ident()
        self.stop_event = threading.Event()
        self.counters: Counter[str] = Counter()
        self.log = logging.getLogger(f"fer.{self.role}:{self.ident}")
        self.started_at = time.time()
        self._last_beat = 0.0
        self._epoch: str | None = None
        parent = os.environ.get(PARENT_ENV, "")
        self._parent = int(parent) if parent.isdigit() else None

    # -- lifecycle hooks -------------------------------------------------------------------
    def setup(self) -> None:
        """Create consumer groups etc.; retried while Redis is unreachable."""

    def step(self) -> None:
        """One unit of work (a blocking read with a timeout, a frame, a batch)."""
        raise NotImplementedError

    def finish(self) -> None:
        """Called once after the loop: finish in-flight work, ack, flush, release."""

    def info(self) -> dict[str, str | int | float]:
        """What the heartbeat publishes (and `up`'s progress shows)."""
        return dict(self.counters)

    # -- control ---------------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        """Whether a stop has been requested."""
        return self.stop_event.is_set()

    def request_stop(self) -> None:
        """Ask the loop to stop after the current step (``finish`` then runs)."""
        self.stop_event.set()

    def install_signal_handlers(self) -> None:
        """Make the first SIGINT/SIGTERM a warm stop and a second one a cold stop (KeyboardInterrupt)."""
        def handler(signum, frame):
            if self.stop_event.is_set():
                raise KeyboardInterrupt  # second signal: stop now
            self.log.info("%s received: finishing in-flight work", signal.Signals(signum).name)
            self.request_stop()

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    def run(self) -> int:
        """Run until stopped; returns a process exit code."""
        self.transport.agree_on_shards(record=True)
        self._retrying(self.setup)
        backoff = self._backoff()
        down_since: float | None = None
        while not self.stopping:
            if self._parent is not None and os.getppid() != self._parent:
                self.log.warning("the `up` that started this %s is gone: stopping", self.role)
                self.request_stop()
                break
            try:
                self.step()
                self._beat()
                if down_since is not None:
                    self.log.warning("Redis reachable again after %.1fs", time.time() - down_since)
                    down_since = None
                    backoff.reset()
            except REDIS_REFUSED as e:
                raise self._refused(e) from e
            except REDIS_DOWN as e:
                if down_since is None:
                    down_since = time.time()
                    self.log.warning("Redis unreachable (%s); retrying with backoff", type(e).__name__)
                self.counters["reconnects"] += 1
                self.on_redis_down()
                self.stop_event.wait(backoff.next())
        try:
            self._retrying(self.finish, attempts=5)
        finally:
            with contextlib.suppress(*REDIS_DOWN):
                health.clear_heartbeat(self.transport, self.role, self.ident)
            # The heartbeat is gone now: this line is the lasting record of what the process
            # did (and dropped, reconnected, dead-lettered), e.g. after a Redis restart wiped
            # the shared stats hash.
            self.log.info("%s %s stopped after %.1fs: %s", self.role, self.ident, time.time() - self.started_at,
                          " ".join(f"{k}={v}" for k, v in sorted(self.info().items())))
        return 0

    def _refused(self, e: Exception) -> BrokerUnavailable:
        return BrokerUnavailable(f"Redis at {redact_url(self.settings.redis.url or '')} refused the credentials "
                                 f"({e}); restart with the current ones in FER_REDIS__URL or --redis-url")

    def on_redis_down(self) -> None:
        """Hook: drop state that a Redis restart invalidates (e.g. unacked batch ids)."""

    def _beat(self) -> None:
        now = time.time()
        if now - self._last_beat >= HEARTBEAT_EVERY_S:
            self._last_beat = now
            try:
                self._check_epoch()
                health.beat(self.transport, self.role, self.ident, HEARTBEAT_TTL_S,
                            {"role": self.role, "started": round(self.started_at, 3), **self.info()})
            except REDIS_DOWN:
                # The step just worked: on a cluster, the node holding this key is down while
                # the shards' nodes answer. The work goes on; the next beat tries again. (One
                # Redis refusing the beat refuses everything: wait it out like any outage.)
                if not self.transport.cluster:
                    raise
                self.counters["heartbeats_missed"] += 1

    def _check_epoch(self) -> None:
        # Redis restarted without persistence (or was flushed): what it held (streams, groups,
        # stats) is gone. Counted and said, so that status and /metrics can tell the loss.
        epoch = self.transport.epoch()
        if self._epoch is not None and epoch != self._epoch:
            self.counters["redis_data_lost"] += 1
            self.log.warning("Redis lost its data (restarted without persistence?): the messages it held are gone; "
                             "see RELIABILITY.md")
        self._epoch = epoch

    def _backoff(self) -> Backoff:
        return Backoff(self.settings.redis.backoff_initial_s, self.settings.redis.backoff_max_s)

    def _retrying(self, fn, attempts: int | None = None) -> None:
        backoff = self._backoff()
        n = 0
        while True:
            try:
                fn()
                return
            except REDIS_REFUSED as e:
                raise self._refused(e) from e
            except REDIS_DOWN as e:
                n += 1
                if (attempts is not None and n >= attempts) or (attempts is None and self.stopping):
                    self.log.error("giving up on %s: Redis unreachable (%s)", fn.__name__, type(e).__name__)
                    return
                self.counters["reconnects"] += 1
                time.sleep(backoff.next())
