"""Wrappers that add parameters Dagster must see: the context and the configuration
resource in front, the wrapped function's own parameters after them."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from e2i_platform.resources.config import ConfigResource


def with_context_and_config(
    wrapper: Callable[..., Any], fn: Callable[..., Any], context_type: type
) -> tuple[bool, bool]:
    """Give `wrapper` the name and docs of `fn` and the signature Dagster reads (inputs,
    resources, config): `context`, `e2i_config`, then `fn`'s other parameters.

    Returns whether `fn` itself takes the context and the configuration resource."""
    params = list(inspect.signature(fn).parameters.values())
    takes_context = bool(params) and params[0].name == "context"
    wants_config = any(p.name == "e2i_config" for p in params)
    own = [p for p in params if p.name not in ("context", "e2i_config")]
    functools.update_wrapper(wrapper, fn)
    head = [
        inspect.Parameter(
            "context", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=context_type
        ),
        inspect.Parameter(
            "e2i_config", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=ConfigResource
        ),
    ]
    wrapper.__signature__ = inspect.Signature([*head, *own])  # type: ignore[attr-defined]
    return takes_context, wants_config
