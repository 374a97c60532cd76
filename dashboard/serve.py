"""Running the dashboard's app: the port bound up front (a taken port is one readable line,
never a uvicorn traceback) and a server that stops cleanly on SIGTERM, as a child of `up`."""

from __future__ import annotations

import errno
import signal
import socket
import threading
from contextlib import contextmanager

import uvicorn

from fer_pipeline.errors import ConfigError

# Shutting down waits this long for open requests (the video streams end at once), then cancels them.
SHUTDOWN_GRACE_S = 2


def bind(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port``, for the server to serve on.

    Raises:
        ConfigError: the port is taken, the host is not an address of this machine, or binding
            is not allowed (a port below 1024 without the right).
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise ConfigError(f"cannot listen on {host!r}: {e.strerror}; pass --host 127.0.0.1 or 0.0.0.0") from None
    sock = socket.socket(family, kind, proto)
    # As uvicorn does: a restarted dashboard gets its port back at once. On Linux this never lets
    # two servers listen on one port, so a taken port still fails here.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is in use; pass --port with a free one "
                              "(or set FER_DASHBOARD__PORT)") from None
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    # Listening now: from here on, the address printed takes connections (they wait in the
    # backlog until the server accepts them), even before uvicorn has started.
    sock.listen(2048)
    return sock


class Server(uvicorn.Server):
    """uvicorn's server, ending the dashboard's video streams when it shuts down, and exiting
    cleanly on SIGINT/SIGTERM.

    A video stream never ends by itself: without a word, uvicorn would wait for each open one
    until its grace period ran out, then cancel it with a traceback in the log. And uvicorn
    re-raises the signal after its graceful shutdown; a process ended by a signal reads as a
    crash to whoever started it (`up` restarts crashed children). Here the signal only asks
    the server to stop, and the command then exits 0.
    """

    async def shutdown(self, sockets=None) -> None:
        self.config.app.state.closing.set()  # the streams see it within a frame period and end
        await super().shutdown(sockets=sockets)

    @contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach the main thread only (a test serving from a thread)
            return

        def stop(signum, frame):
            if self.should_exit and signum == signal.SIGINT:
                self.force_exit = True  # a second Ctrl-C: stop waiting
            self.should_exit = True

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def server(app, **config) -> Server:
    """A ``Server`` for the dashboard's ``app`` (uvicorn.Config's keywords: host, port, ...)."""
    return Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                 timeout_graceful_shutdown=SHUTDOWN_GRACE_S, **config))


def serve(app, sock: socket.socket) -> None:
    """Serve ``app`` on the bound ``sock`` until SIGINT or SIGTERM; returns normally then."""
    server(app).run(sockets=[sock])
