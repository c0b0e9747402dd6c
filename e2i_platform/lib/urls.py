"""URLs shown to people: in metadata, logs and error messages."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact_uri(uri: str) -> str:
    """The URI without `user:password@` (and, for network URIs, without query or fragment)."""
    parts = urlsplit(uri)
    if not parts.netloc:
        return uri
    netloc = parts.netloc.rpartition("@")[2]
    if parts.scheme.startswith("sqlite"):
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
