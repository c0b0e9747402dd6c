"""Where releases live and how one is read: the manifest files under
`<store>/releases/`, `releases/CURRENT`, and the check every reader goes through.

`<store>` is the home on this machine's disk or, with `platform.store.url`, the object
store every machine shares (`lib.store.store_root`; `release_store(settings)`): every
function here takes that root, a `Path` or a `UPath`, and reads the same layout on
both. Manifests name model files relative to the models' root (`lib.home_paths`;
`training.model_run.model_store`: the home, or the same shared store).

Shared by every stage that reads the release in service -- training's comparison with
the champion, promotion, scoring, the ops commands -- so none of them imports the stage
that writes releases (`promotion.release`).

Integrity: each manifest records `content_sha256`, the sha256 of its canonical content
(`manifest_sha256`: compact JSON, sorted keys, without that field). Every reader goes
through `read_manifest`, which refuses a manifest that is missing, not a JSON object,
filed under another release id, or whose content no longer matches its hash; the error
names the manifest, the expected and actual hashes, and -- when `releases/CURRENT` named
it -- the CURRENT file and the recovery command (`repair`, `ops.releases`). Manifests
written before hashes have no `content_sha256`: they are read, and reported as
"unverified (written before hashes)" (`verification`), never as verified.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from e2i_platform.lib.store import store_root

if TYPE_CHECKING:
    from upath import UPath

RELEASES = "releases"


def release_store(settings) -> Path | UPath:
    """The root the platform's settings keep releases under: the home on this disk, or
    the object store `platform.store.url` names (an object with a `home` only, a stand-in
    for the settings, names the disk)."""
    store_settings = getattr(getattr(settings, "platform", None), "store", None)
    return store_root(settings.home, store_settings.url if store_settings else None)


def releases_dir(store: Path | UPath) -> Path | UPath:
    """`<store>/releases`: `store` is a home (a local path) or a store root (`UPath`)."""
    return (store if hasattr(store, "fs") else Path(store)) / RELEASES


def manifest_path(store: Path | UPath, release_id: str) -> Path | UPath:
    return releases_dir(store) / release_id / "manifest.json"


REPORT = "report"  # the manifest's entry naming its report file and that file's sha256
REPORT_FILE = "report.html"


def report_path(store: Path | UPath, release_id: str) -> Path | UPath:
    """The release report (`promotion.release_report`) next to the release's manifest."""
    return releases_dir(store) / release_id / REPORT_FILE


CONTENT_HASH = "content_sha256"
VERIFIED = "verified"
UNVERIFIED = "unverified (written before hashes)"
REPAIR_COMMAND = (
    'make releases REPAIR="<why>" (or: python -m e2i_platform.ops.releases --repair '
    '--reason "<why>")'
)
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ReleaseIntegrityError(RuntimeError):
    """A release manifest, or releases/CURRENT, that cannot be trusted."""


def manifest_sha256(manifest: dict) -> str:
    """sha256 of the manifest's canonical content: compact JSON with sorted keys, without
    the `content_sha256` field itself."""
    content = {k: v for k, v in manifest.items() if k != CONTENT_HASH}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def verification(manifest: dict) -> str:
    """How far a manifest that `read_manifest` returned is verified: "verified" (its
    content matches its hash), or "unverified (written before hashes)"."""
    return VERIFIED if CONTENT_HASH in manifest else UNVERIFIED


@dataclass(frozen=True)
class ManifestCheck:
    """One release directory's manifest as found in the store."""

    release_id: str
    path: Path | UPath
    manifest: dict | None  # None when `problem` says why it cannot be used
    problem: str | None  # "is missing", "is not readable JSON (...)", "does not match ..."

    @property
    def status(self) -> str:
        if self.problem is not None:
            return "BROKEN: " + self.problem
        return verification(self.manifest)


def check_manifest(store: Path | UPath, release_id: str) -> ManifestCheck:
    """Read and verify one manifest, without raising: what is wrong with it, if anything."""
    path = manifest_path(store, release_id)

    def broken(problem: str) -> ManifestCheck:
        return ManifestCheck(release_id, path, None, problem)

    if not path.exists():
        return broken("is missing")
    # A missing object or bytes that are not JSON are a broken manifest; any other read
    # error (a store briefly unreachable, credentials refused) is raised: a repair must
    # never set an intact release aside because the store did not answer.
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        return broken("is missing")
    except (UnicodeDecodeError, ValueError) as exc:
        return broken(f"is not readable JSON ({type(exc).__name__}: {exc})")
    if not isinstance(manifest, dict):
        return broken(f"does not hold a JSON object (it holds a {type(manifest).__name__})")
    if manifest.get("release_id") != release_id:
        return broken(
            f"names release {manifest.get('release_id')!r}, not {release_id!r} (its directory)"
        )
    if CONTENT_HASH in manifest:
        expected, actual = manifest[CONTENT_HASH], manifest_sha256(manifest)
        if not (isinstance(expected, str) and _SHA256.fullmatch(expected)) or expected != actual:
            return broken(
                f"does not match its content hash: expected {CONTENT_HASH} {expected} (recorded "
                f"in it), actual {actual} (of its content now); it was changed after it was "
                "written"
            )
    return ManifestCheck(release_id, path, manifest, None)


def read_manifest(store: Path | UPath, release_id: str) -> dict:
    """The manifest of a release, verified against its content hash (see the module doc);
    `ReleaseIntegrityError` naming the file and what is wrong otherwise."""
    check = check_manifest(store, release_id)
    if check.problem is not None:
        raise ReleaseIntegrityError(
            f"release {release_id}: manifest {check.path} {check.problem}. Restore it from a "
            f"backup, or set it aside and point CURRENT at an intact release: {REPAIR_COMMAND}"
        )
    return check.manifest


def current_pointer(store: Path | UPath) -> Path | UPath:
    return releases_dir(store) / "CURRENT"


def current_release_id(store: Path | UPath) -> str | None:
    """The release CURRENT names; None when no release was made yet. An error when CURRENT
    is unreadable or empty, or missing while releases exist (never "no champion")."""
    pointer = current_pointer(store)
    if not pointer.exists():
        if existing := release_ids(store):
            raise ReleaseIntegrityError(
                f"releases/CURRENT ({pointer}) is missing, but {len(existing)} release(s) "
                f"exist under {releases_dir(store)} (newest {existing[-1]}). Recover: "
                f"{REPAIR_COMMAND}"
            )
        return None
    try:
        release_id = pointer.read_text().strip()
    except (OSError, ValueError) as exc:
        raise ReleaseIntegrityError(
            f"releases/CURRENT ({pointer}) is not readable ({type(exc).__name__}: {exc}). "
            f"Recover: {REPAIR_COMMAND}"
        ) from None
    if not release_id or "/" in release_id or release_id.startswith("."):
        raise ReleaseIntegrityError(
            f"releases/CURRENT ({pointer}) does not name a release (it holds {release_id!r}). "
            f"Recover: {REPAIR_COMMAND}"
        )
    return release_id


def current_release(store: Path | UPath) -> dict | None:
    """The manifest CURRENT names, verified; None when no release was made yet."""
    release_id = current_release_id(store)
    if release_id is None:
        return None
    check = check_manifest(store, release_id)
    if check.problem is not None:
        raise ReleaseIntegrityError(
            f"releases/CURRENT ({current_pointer(store)}) names release {release_id}, but its "
            f"manifest {check.path} {check.problem}. Nothing scores, compares, promotes or "
            f"rolls back with it. Recover: {REPAIR_COMMAND} -- it lists every release with "
            "its verification status, sets broken manifests aside and points CURRENT at the "
            "newest intact release, recorded as a release of kind repair."
        )
    return check.manifest


def release_ids(store: Path | UPath) -> list[str]:
    """Every release directory's id, oldest first (release ids sort by time); directories
    whose name starts with a dot (the set-aside ones) are not releases."""
    root = releases_dir(store)
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def all_releases(store: Path | UPath) -> list[dict]:
    """Every release manifest, oldest first, each verified (`read_manifest`)."""
    root = releases_dir(store)
    if not root.exists():
        return []
    ids = sorted(p.name for p in root.iterdir() if (p / "manifest.json").exists())
    return [read_manifest(store, i) for i in ids]
