"""The webhook sink: episode events (and optionally labels) POSTed as JSON to a URL.

One POST per episode event (its JSON object, ``payloads.episode_json``); with labels on,
the labels of a read batch go in one POST, ``{"type": "labels", "id": ..., "labels": [...]}``.
Any 2xx accepts; 408, 429, 5xx, a timeout, no connection (at start-up too) or a broken
answer mean "down": the request is retried with backoff and the labels stay pending
meanwhile. A 3xx is "down" as well, never followed: urllib would turn the POST into a GET
without its body (and carry the signature along), and a 2xx to that GET would ack labels
the receiver never got; the warning names where it points, to fix the URL with. Any other
status is a refusal for good: that item is dead-lettered with the status, and the sink goes on.

Each request carries ``User-Agent: fer-pipeline/<version>``, ``X-Fer-Event`` (its type) and
``X-Fer-Event-Id`` (the ``id`` in the body: delivery is at least once, dedupe on it), and,
with ``FER_SINK__WEBHOOK_SECRET`` set, ``X-Fer-Signature: sha256=<hex HMAC-SHA256 of the
body>``, as GitHub signs its webhooks. Standard library only (urllib).
"""

from __future__ import annotations

import hashlib
import hmac
import urllib.error
import urllib.request
from collections import deque
from http.client import HTTPException
from importlib.metadata import PackageNotFoundError, version
from urllib.parse import urlsplit

from fer_pipeline.analytics.options import ReportOptions
from fer_pipeline.consumers.sinks.base import Item, SinkService, TargetDown
from fer_pipeline.consumers.sinks.payloads import VERSION, dumps
from fer_pipeline.errors import ConfigError
from fer_pipeline.settings import Settings
from fer_pipeline.transport import Transport
from fer_pipeline.urls import redact_url, scrub

RETRYABLE = {408, 429}  # and every 5xx: the server may take it later
MAX_LABELS_PER_POST = 500


def _user_agent() -> str:
    try:
        return f"fer-pipeline/{version('fer-pipeline')}"
    except PackageNotFoundError:  # running from a checkout that is not installed
        return "fer-pipeline"


def check_url(url: str) -> None:
    """A ConfigError (password masked) unless ``url`` is ``http(s)://host...``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"webhook URL must be http(s)://host[:port]/path, got {redact_url(url)}")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Follows no redirect: each 3xx comes back as an HTTPError (see the module docstring)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: PLR0913 - urllib's signature
        return None


def sign(secret: str, body: bytes) -> str:
    """The ``X-Fer-Signature`` value of ``body``: ``sha256=`` and the hex HMAC-SHA256 with ``secret``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookSink(SinkService):
    """Role "sink-webhook": episode events (and labels, batched, with ``labels``) to a URL."""

    kind = "webhook"
    role = "sink-webhook"

    def __init__(self, settings: Settings, transport: Transport, url: str, ident: str | None = None, *,
                 labels: bool = False, group: str | None = None, options: ReportOptions | None = None) -> None:
        super().__init__(settings, transport, ident, group=group, labels=labels, options=options)
        check_url(url)
        self.url = url
        self._opener = urllib.request.build_opener(_NoRedirects)
        secret = settings.sink.webhook_secret
        self._secret = secret.get_secret_value() if secret is not None else None
        self._agent = _user_agent()

    def deliver(self, outbox: deque[Item]) -> None:
        while outbox:
            if outbox[0].kind == "label":
                labels: list[Item] = []
                while outbox and outbox[0].kind == "label" and len(labels) < MAX_LABELS_PER_POST:
                    labels.append(outbox.popleft())
                first, last = labels[0].body["id"], labels[-1].body["id"]
                body = {"v": VERSION, "type": "labels", "id": f"labels/{first}..{last}/{len(labels)}",
                        "labels": [it.body for it in labels]}
                status = self._post(body, labels, outbox)
                if status is not None:  # refused for good: every label of the POST is dead-lettered
                    for it in reversed(labels):
                        outbox.appendleft(it)
                    for _ in labels:
                        self.reject(outbox, f"HTTP {status}")
            else:
                status = self._post(outbox[0].body, [outbox[0]], outbox)
                if status is None:
                    outbox.popleft()
                else:
                    self.reject(outbox, f"HTTP {status}")

    def _post(self, body: dict, items: list[Item], outbox: deque[Item]) -> int | None:
        """POST ``body``; None once accepted, the status when refused for good. ``TargetDown``
        (with the items put back at the head of the outbox) when it may work later."""
        data = dumps(body)
        headers = {"Content-Type": "application/json", "User-Agent": self._agent, "X-Fer-Event": str(body["type"]),
                   "X-Fer-Event-Id": str(body["id"])}
        if self._secret is not None:
            headers["X-Fer-Signature"] = sign(self._secret, data)
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.settings.sink.timeout_s) as response:
                response.read()
                return None
        except urllib.error.HTTPError as e:
            e.close()
            if 300 <= e.code < 400:
                self._put_back(items, outbox)
                where = e.headers.get("Location") if e.headers is not None else None
                raise TargetDown(f"{redact_url(self.url)} answered HTTP {e.code}, a redirect to "
                                 f"{redact_url(where[:200]) if where else '(no Location)'}, which a sink never follows: "
                                 f"set the URL it points to") from None
            if e.code in RETRYABLE or e.code >= 500:
                self._put_back(items, outbox)
                raise TargetDown(f"{redact_url(self.url)} answered HTTP {e.code}") from None
            return e.code
        except HTTPException as e:  # BadStatusLine, IncompleteRead: a broken answer
            self._put_back(items, outbox)
            raise TargetDown(f"{redact_url(self.url)} gave a broken answer ({type(e).__name__}: "
                             f"{scrub(str(e)[:200], self.url)})") from None
        except (urllib.error.URLError, OSError) as e:
            self._put_back(items, outbox)
            reason = getattr(e, "reason", e)
            raise TargetDown(f"cannot reach {redact_url(self.url)}: {scrub(str(reason)[:200], self.url)}") from None

    @staticmethod
    def _put_back(items: list[Item], outbox: deque[Item]) -> None:
        if items and (not outbox or outbox[0] is not items[0]):  # labels were taken off the outbox
            for it in reversed(items):
                outbox.appendleft(it)
