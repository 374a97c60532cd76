"""Connection URLs in what we print: passwords never reach a log, a progress line or an error."""

from __future__ import annotations

from urllib.parse import urlsplit


def redact_url(url: str | None) -> str:
    """The URL with any password replaced, safe for logs and progress output.

    Covers the userinfo part and query options that carry secrets (redis-py accepts
    ``?password=`` and ``?ssl_password=`` too).
    """
    if not url:
        return "<none>"
    parts = urlsplit(url)
    query = parts.query
    if query:
        query = "&".join(f"{k}=***" if "password" in k.lower() else f"{k}={v}" if sep else k
                         for k, sep, v in (item.partition("=") for item in query.split("&")))
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"  # host part as written ([::1] too)
    if netloc == parts.netloc and query == parts.query:
        return url
    rest = parts.path + (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")
    return f"{parts.scheme}://{netloc}{rest}"
