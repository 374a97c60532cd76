"""Connection URLs in what we print: passwords never reach a log, a progress line or an error."""

from __future__ import annotations

import re

# What follows the userinfo's "@": a host name or [IPv6] address, a port, then a path, a query or the end.
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~-]*)(:\d*)?(/|\?|$)")
# Query options that carry secrets (redis-py accepts ``?password=`` and ``?ssl_password=``).
_SECRET_KEY_PARTS = ("password", "secret", "token")


def redact_url(url: str | None) -> str:
    """The URL with any password replaced by ``***``, safe for logs and progress output.

    Parsed by hand rather than with ``urlsplit``: a password typed raw, with ``#``, ``?`` or
    ``/`` in it, ends urlsplit's host part early and would be printed. The userinfo ends at
    the last ``@`` that a host follows (hosts never hold ``@``, a password may); query options
    whose names say password, secret or token are masked too.
    """
    if not url:
        return "<none>"
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    before_query, q, query = rest, "", ""
    at = _userinfo_end(rest)
    mark = rest.find("?", at + 1)  # the query starts after the userinfo, whatever the password holds
    if mark >= 0:
        before_query, q, query = rest[:mark], "?", rest[mark + 1:]
    if at >= 0:
        user, colon, _ = before_query[:at].partition(":")
        if colon:
            before_query = f"{user}:***@{before_query[at + 1:]}"
    if query:
        query = "&".join(_masked(item) for item in query.split("&"))
    return f"{scheme}://{before_query}{q}{query}"


def raw_password_hint(url: str | None) -> str:
    """A hint when the URL's password holds characters a URL parser cuts at (``# ? / @``)."""
    if any(c in _password(url) for c in "#?/@"):
        return " (the password holds # ? / or @: percent-encode them in the URL, e.g. # as %23)"
    return ""


def has_password(url: str | None) -> bool:
    """Whether the URL carries a password (in its userinfo or a secret query option)."""
    return bool(url) and redact_url(url) != url


def scrub(text: str, url: str | None) -> str:
    """``text`` (an error message about ``url``) with the URL's password taken out, wherever
    a library quoted it (or a part of it)."""
    password = _password(url)
    for piece in sorted({password, *password.replace("#", "/").replace("?", "/").split("/")}, key=len, reverse=True):
        if len(piece) >= 2:
            text = text.replace(piece, "***")
    return text


def _password(url: str | None) -> str:
    """The password in the URL's userinfo as typed ("" when there is none)."""
    _, sep, rest = (url or "").partition("://")
    at = _userinfo_end(rest) if sep else -1
    return rest[:at].partition(":")[2] if at >= 0 else ""


def _masked(item: str) -> str:
    key, eq, _ = item.partition("=")
    return f"{key}=***" if eq and any(p in key.lower() for p in _SECRET_KEY_PARTS) else item


def _userinfo_end(rest: str) -> int:
    """Index of the "@" that ends the userinfo (-1: none): the last one a host follows."""
    ats = [i for i, c in enumerate(rest) if c == "@"]
    for i in reversed(ats):
        if _HOST.match(rest, i + 1):
            return i
    return ats[-1] if ats else -1
