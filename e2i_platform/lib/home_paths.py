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
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath


def stored(home: Path | str, path: Path | str) -> str:
    """`path` as a record stores it: relative to `home`, in POSIX form."""
    home, path = Path(home), Path(path)
    for inner, outer in ((path, home), (path.resolve(), home.resolve())):
        if inner.is_relative_to(outer):
            return inner.relative_to(outer).as_posix()
    raise ValueError(f"{path} is not under the home {home}: a record stores only files of its home")


def resolve(home: Path | str, recorded: str, layout: Sequence[str], where: str) -> Path:
    """The file of `home` that `recorded` names (see the module doc).

    `layout` is the stored path's shape below the home, which an absolute path of
    another home must end in: one regular expression per component (e.g. `("models", r"[^/]+", r"spec-\\w+_exec-\\w+", r"v\\d+", "model.txt")`);
    `where` says which record and key held it, for the error."""
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
