"""Credentials out of MLflow errors: a tracking URI `https://user:password@host` is quoted
in full by MLflow's messages; every resource method that talks to the store goes through
`secret_free`, so such a message reaches Dagster's logs without the credentials."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import dagster as dg

ERROR_TEXT_LIMIT = 500


def redact(uri: str, text: str) -> str:
    """Remove the URI's credentials from a message."""
    parts = urlsplit(uri)
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    if userinfo:
        text = text.replace(userinfo + "@", "")
        for secret in {parts.password, unquote(parts.password or "")}:
            if secret:
                text = text.replace(secret, "***")
    return text


def leaks(uri: str, err: BaseException) -> bool:
    """Whether the error, or an error it was raised from, quotes the URI's credentials."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if redact(uri, str(current)) != str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def error_text(uri: str, err: BaseException) -> str:
    """`Class (cause class): message`, without credentials, at most ~500 characters."""
    cause = err.__cause__ or err.__context__
    kind = type(err).__name__
    if cause is not None:
        kind += f" ({type(cause).__name__})"
    detail = redact(uri, str(err))
    if len(detail) > ERROR_TEXT_LIMIT:
        detail = detail[:ERROR_TEXT_LIMIT] + "..."
    return f"{kind}: {detail}"


def secret_free(method: Callable) -> Callable:
    """Errors whose text (or chained errors' text) holds the URI's credentials become a
    dg.Failure with the credentials removed, raised `from None` so that the original
    messages are not printed; other errors pass through unchanged. For methods of an
    object with `tracking_uri` and `safe_uri`."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except dg.Failure:
            raise
        except Exception as err:
            if not leaks(self.tracking_uri, err):
                raise
            raise dg.Failure(
                f"MLflow {method.__name__} at {self.safe_uri} failed: "
                f"{error_text(self.tracking_uri, err)}"
            ) from None

    return wrapper
