"""Paths that records and manifests store, relative to the home they belong to.

A home can be copied or restored at another path (a backup restored elsewhere, a
second checkout). A record that named its files by absolute path would then make the
copy read, or write, the original. So a record names a file of its home relative to
the home (`models/<model>/spec-…_exec-…/v1/model.txt`), and a reader resolves it
against the home in force.

Records written before this rule hold absolute paths. Such a path inside this home is
used as it is; one that ends in the home's layout (e.g. `…/models/<model>/spec-…/v1/
model.txt`) under another directory names the same file of this home, because that
is the file the copy brought along; anything else is an error that names the record.
Never is a path of another home read silently.

The root can also be the object store every machine shares (`lib.store.store_root`, a
`UPath` such as `s3://bucket/prefix`): a record then names the object relative to the
store's root, in the same layout, and every machine resolves it against the store. A
recorded path is never an object store URL; an absolute path of a home (written
before) in the layout names the store's object of that layout, as it names a copy's
file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from upath import UPath


def _remote(root) -> bool:
    return hasattr(root, "fs")


def stored(home: Path | UPath | str, path: Path | UPath | str) -> str:
    """`path` as a record stores it: relative to `home` (a home, or an object store's
    root), in POSIX form."""
    if _remote(home):
        return _stored_in_store(home, path)
    home, path = Path(home), Path(path)
    for inner, outer in ((path, home), (path.resolve(), home.resolve())):
        if inner.is_relative_to(outer):
            return inner.relative_to(outer).as_posix()
    raise ValueError(f"{path} is not under the home {home}: a record stores only files of its home")


def _stored_in_store(root: UPath, path) -> str:
    inside = (
        _remote(path)
        and path.protocol == root.protocol
        and (path.path.rstrip("/") + "/").startswith(root.path.rstrip("/") + "/")
    )
    if not inside:
        raise ValueError(
            f"{path} is not under the store {root}: a record stores only objects of its store"
        )
    return PurePosixPath(path.path[len(root.path.rstrip("/")) :].lstrip("/")).as_posix()


def resolve(
    home: Path | UPath | str, recorded: str, layout: Sequence[str], where: str
) -> Path | UPath:
    """The file of `home` that `recorded` names (see the module doc); `home` is a home
    on this disk or an object store's root (then the object of that root).

    `layout` is the stored path's shape below the home, which an absolute path of
    another home must end in: one regular expression per component (e.g. `("models", r"[^/]+", r"spec-\\w+_exec-\\w+", r"v\\d+", "model.txt")`);
    `where` says which record and key held it, for the error."""
    if _remote(home):
        return _resolve_in_store(home, recorded, layout, where)
    home = Path(home)
    path = Path(recorded)
    if not path.is_absolute():
        parts = PurePosixPath(recorded).parts
        if ".." in parts:
            raise ValueError(f"{where}: {recorded!r} leaves the home; refusing to read it")
        return home.joinpath(*parts)
    if _inside(path, home):
        return path
    tail = path.parts[-len(layout) :]
    if len(path.parts) > len(layout) and _fits(tail, layout):
        return home.joinpath(*tail)
    raise ValueError(
        f"{where}: {recorded} is outside this home ({home}) and not in its layout "
        f"({'/'.join(layout)}); refusing to read another home's file"
    )


def _resolve_in_store(root: UPath, recorded: str, layout: Sequence[str], where: str) -> UPath:
    path = PurePosixPath(recorded)
    if "://" not in recorded and not path.is_absolute():
        if ".." in path.parts:
            raise ValueError(f"{where}: {recorded!r} leaves the store; refusing to read it")
        return root.joinpath(*path.parts)
    tail = path.parts[-len(layout) :]
    if "://" not in recorded and len(path.parts) > len(layout) and _fits(tail, layout):
        return root.joinpath(*tail)
    raise ValueError(
        f"{where}: {recorded} is not a path relative to the store ({root}) nor in its "
        f"layout ({'/'.join(layout)}); refusing to read it"
    )


def _fits(parts: Sequence[str], layout: Sequence[str]) -> bool:
    return len(parts) == len(layout) and all(
        re.fullmatch(pattern, part) for pattern, part in zip(layout, parts, strict=True)
    )


def _inside(path: Path, home: Path) -> bool:
    """Lexically under `home`, or under it once symlinks are resolved (one home reached
    by two spellings is still one home)."""
    if path.is_relative_to(home):
        return True
    return path.resolve().is_relative_to(home.resolve())
