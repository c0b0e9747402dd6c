"""The `make mutation` driver: mutation testing of the gate modules against the fast lanes.

Usage
    make mutation                                   # every module in tests/mutation.toml
    make mutation ARGS="--module lib/gates.py"      # one module (repeat --module for more)
    python tests/mutation.py --module quality --max-mutants 0    # a package, every mutant
    python tests/mutation.py --module ops/reuse.py --list-tests  # test files importing it

    --module PATH      under e2i_platform/ (or the repo root); a directory: each module in it
    --max-mutants N    mutants per module, 0 = all (default from tests/mutation.toml)
    --seed N           the sampling seed;  --workers N  (default: the usable cores, at most 2)
    --skip-tests GLOB  leave out test files (e.g. an unfinished one); repeatable
    --report PATH      the JSON report (default: report.json in the run's temp directory)
    --keep             keep the temp copies (to rerun a mutant by hand with `cosmic-ray`)

A module passes at >= ``threshold`` % (tests/mutation.toml): killed and timed-out
mutants over all mutants run. Exit status: 0 when every module passes, 1 when one
is below the threshold or a mutant could not be run, 2 when the baseline or the
isolation check fails, 130 when interrupted. Surviving mutants are listed as
``file:line operator`` with the mutated line; the JSON report has them all.

How it works. /work/main is never written: the tracked and untracked-but-not-ignored
files of the working copy (uncommitted edits included) are copied into one temp
tree per worker, and each worker runs with ``PYTHONPATH`` at its own tree, so the
editable install's ``e2i_platform`` is never imported. Before any mutant runs the
driver proves it: the baseline (the fast-lane tests the modules need, unmutated)
must pass in a copy, and for every module a canary (a ``raise`` appended to the
module in a copy) must fail that module's tests with the canary's message.

Mutants are cosmic-ray's (``cosmic_ray.commands.init``; it mutates decorated
functions and module-level code too), run by cosmic-ray's http distributor on one
worker per copy (bound to 127.0.0.1). Which tests a mutant runs is derived, not
listed: the fast-lane test files that import the module (a static import graph of
the copy: ``import`` statements anywhere, lazy ones included, and module names given
as strings) run once unmutated with the modules probed (a call recorded first in
every function body, compiled in memory: no tracing), which maps each test to the
module functions it calls. A mutant inside a function's body then runs only the
tests that called that function (none: it survives without a run, and the report
says "no test calls ..."); a mutant anywhere else (module level, decorators,
defaults, or a function that runs at collection) runs every test of those files,
the ones calling into the module first. Each run is ``pytest -x`` and is stopped
at ``timeout_factor`` x its tests' baseline seconds (+ start-up) + ``timeout_extra_s``.

Left out before running, as cosmic-ray filters do (the result is SKIPPED): mutants
of annotations in modules with ``from __future__ import annotations`` outside
class bodies (never evaluated: equivalent), the ``[[exclude]]`` entries of
tests/mutation.toml (equivalent mutants, each with its reason), and -- when a
module has more than ``max_mutants`` -- the mutants not drawn by the seeded
sample, which takes one mutant per mutated position before a second at any.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import fnmatch
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CONFIG = HERE / "mutation.toml"
PACKAGE = "e2i_platform"
CANARY = "mutation canary: the copy's module is the one imported"
ANNOTATION_REASON = "annotation never evaluated (from __future__ import annotations)"
NOT_SAMPLED = "not sampled"
STARTUP_GUESS_S = 5.0  # a pytest run's start-up before the canary has measured it


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Exclusion:
    module: str
    line: str
    operator: str
    reason: str
    previous: str | None = None  # the line before, where `line` alone is ambiguous


@dataclass(frozen=True)
class Settings:
    modules: tuple[str, ...]
    lanes: tuple[str, ...]
    threshold: float
    max_mutants: int
    seed: int
    timeout_factor: float
    timeout_extra_s: float
    baseline_timeout_s: float
    skip_tests: tuple[str, ...]
    exclusions: tuple[Exclusion, ...]


def load_settings(path: Path = CONFIG) -> Settings:
    raw = tomllib.loads(path.read_text())
    return Settings(
        modules=tuple(raw["modules"]),
        lanes=tuple(raw.get("lanes", ("preflight", "unit"))),
        threshold=float(raw.get("threshold", 85.0)),
        max_mutants=int(raw.get("max_mutants", 0)),
        seed=int(raw.get("seed", 0)),
        timeout_factor=float(raw.get("timeout_factor", 3.0)),
        timeout_extra_s=float(raw.get("timeout_extra_s", 15.0)),
        baseline_timeout_s=float(raw.get("baseline_timeout_s", 900.0)),
        skip_tests=tuple(raw.get("skip_tests", ())),
        exclusions=tuple(Exclusion(**e) for e in raw.get("exclude", ())),
    )


def expand_modules(root: Path, entries: list[str] | tuple[str, ...]) -> list[str]:
    """Repository-relative module files for `entries` (files or directories, given
    relative to the repo root or to the package)."""
    out: list[str] = []
    for entry in entries:
        entry = entry.strip("/")
        candidates = [root / entry, root / PACKAGE / entry]
        path = next((c for c in candidates if c.exists()), None)
        if path is None:
            raise SystemExit(f"mutation: no module or package {entry!r}")
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            rel = file.relative_to(root).as_posix()
            if rel not in out:
                out.append(rel)
    return out


def short(module: str) -> str:
    """`lib/gates.py` for `e2i_platform/lib/gates.py`: the names the issue uses."""
    return module.removeprefix(f"{PACKAGE}/")


# --------------------------------------------------------------------------- the copies


def tracked_files(repo: Path) -> list[str]:
    """Tracked and untracked-but-not-ignored files of the working copy that exist."""
    out = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
    ).stdout.decode()
    return sorted({p for p in out.split("\0") if p and (repo / p).is_file()})


def copy_tree(repo: Path, dest: Path, files: list[str]) -> None:
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, target)
    # Hash-checked bytecode: a mutated module never matches it (so it is recompiled),
    # while the other modules skip compiling in every test run.
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "--invalidation-mode", "checked-hash", PACKAGE],
        cwd=dest,
        check=True,
    )


def copy_env(copy: Path) -> dict[str, str]:
    """The environment of a worker and of its tests: the copy first on sys.path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(copy)
    env["PYTHONUNBUFFERED"] = "1"
    # Every mutant is judged on the baseline's examples: hypothesis derandomized, as
    # under CI (a random example failing would count a mutant as killed).
    env["CI"] = "true"
    return env


# --------------------------------------------------------------------------- test subsets


def module_index(root: Path) -> dict[str, Path]:
    """Importable name -> file: the package's modules and the helpers in tests/."""
    index: dict[str, Path] = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        index[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in sorted((root / "tests").glob("*.py")):  # tests/ is on sys.path in a run
        index.setdefault(path.stem, path)
    return index


_MODULE_NAME = re.compile(rf"{PACKAGE}(\.\w+)+")


def imports_of(path: Path, name: str, index: dict[str, Path]) -> set[str]:
    """Modules of `index` that `path` imports anywhere (functions included), with
    their parent packages, plus package modules named by a string (``-m ...``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and _MODULE_NAME.fullmatch(str(node.value)):
            names.add(node.value)
    found: set[str] = set()
    for imported in names:
        parts = imported.split(".")
        found.update(
            ".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in index
        )
    found.discard(name)
    return found


def lane_test_files(root: Path, lanes: tuple[str, ...], skip: tuple[str, ...] = ()) -> list[Path]:
    """The lanes' test files, less those matching a `skip` glob (repo-relative)."""
    files = (p for lane in lanes for p in (root / "tests" / lane).glob("test_*.py"))
    rel = lambda p: p.relative_to(root).as_posix()  # noqa: E731
    return sorted(p for p in files if not any(fnmatch.fnmatch(rel(p), g) for g in skip))


def import_depths(
    root: Path, lanes: tuple[str, ...], skip: tuple[str, ...] = ()
) -> dict[str, dict[str, int]]:
    """Test file (repo-relative) -> {module file: import distance}; 1 = imported by the
    test file itself. The tests' conftest.py files count as imported by every test."""
    index = module_index(root)
    edges: dict[str, set[str]] = {}

    def deps(name: str) -> set[str]:
        if name not in edges:
            edges[name] = imports_of(index[name], name, index)
        return edges[name]

    out: dict[str, dict[str, int]] = {}
    for test in lane_test_files(root, lanes, skip):
        rel = test.relative_to(root).as_posix()
        first = imports_of(test, f"tests.{test.stem}", index)
        for conftest in (root / "tests" / "conftest.py", test.parent / "conftest.py"):
            if conftest.is_file():
                first |= imports_of(conftest, "conftest", index)
        depth = dict.fromkeys(first, 1)
        frontier = sorted(first)
        while frontier:
            nxt = []
            for name in frontier:
                for dep in sorted(deps(name)):
                    if dep not in depth:
                        depth[dep] = depth[name] + 1
                        nxt.append(dep)
            frontier = nxt
        out[rel] = {index[n].relative_to(root).as_posix(): d for n, d in depth.items()}
    return out


def subset_for(
    module: str, depths: dict[str, dict[str, int]], times: dict[str, float]
) -> list[str]:
    """The test files that reach `module`, most direct first, then fastest first."""
    reaching = [t for t, mods in depths.items() if module in mods]
    return sorted(reaching, key=lambda t: (depths[t][module], times.get(t, 0.0), t))


# --------------------------------------------------------------------------- the call map

PROFILE_ENV = "E2I_MUTATION_PROFILE"  # a directory: the baseline's call map goes there
PROBED_ENV = "E2I_MUTATION_MODULES"  # the module files to probe, os.pathsep-separated
PROBE = "__e2i_mutation_probe__"  # a builtin while probing: records a function's call


class _Calls:
    """Package functions (``file:first line``) called per test and at collection."""

    current: set[str] | None = None
    collection: set[str] = set()
    tests: dict[str, dict] = {}

    @classmethod
    def hit(cls, key: str) -> None:
        (cls.current if cls.current is not None else cls.collection).add(key)


def _probed_code(source: bytes, path: str, rel: str):
    """`path` compiled with a probe call first in every function body (after its
    docstring); line numbers are the source's, so code objects keep their first lines."""
    tree = ast.parse(source, filename=path)
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        body = node.body
        docstring = (
            isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        )
        at = body[1] if docstring and len(body) > 1 else body[0]
        call = ast.Expr(ast.Call(ast.Name(PROBE, ast.Load()), [ast.Constant(f"{rel}:{first}")], []))
        body.insert(1 if docstring else 0, ast.copy_location(call, at))
    return compile(ast.fix_missing_locations(tree), path, "exec", dont_inherit=True)


def _install_probes(root: Path, files: list[str]) -> None:
    """Probe `files` (repo-relative) when they are imported: a meta path finder in front."""
    import builtins
    import importlib.machinery
    import importlib.util

    probed = {str((root / f).resolve()): f for f in files}
    setattr(builtins, PROBE, _Calls.hit)

    class ProbedLoader(importlib.machinery.SourceFileLoader):
        def get_code(self, fullname):  # never the cached bytecode: that has no probes
            path = str(Path(self.path).resolve())
            return _probed_code(self.get_data(self.path), self.path, probed[path])

    class ProbedFinder:
        @staticmethod
        def find_spec(fullname, path=None, target=None):
            if not fullname.startswith(PACKAGE):
                return None
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            if spec is None or not spec.origin or str(Path(spec.origin).resolve()) not in probed:
                return None
            loader = ProbedLoader(fullname, spec.origin)
            return importlib.util.spec_from_file_location(
                fullname,
                spec.origin,
                loader=loader,
                submodule_search_locations=spec.submodule_search_locations,
            )

    sys.meta_path.insert(0, ProbedFinder)


def pytest_configure(config) -> None:
    """As a pytest plugin (``-p mutation`` with ``E2I_MUTATION_PROFILE`` set): record per
    test (setup to teardown) which functions of the probed modules it called, and which
    ran outside any test (collection: imports of test modules and their helpers)."""
    out = os.environ.get(PROFILE_ENV)
    if out:
        config.pluginmanager.register(_call_recorder(Path(out)), "mutation-calls")


def _call_recorder(out: Path):
    import pytest

    class Recorder:
        @pytest.hookimpl(wrapper=True)
        def pytest_runtest_protocol(self, item, nextitem):
            _Calls.current = set()
            started = time.perf_counter()
            try:
                return (yield)
            finally:
                _Calls.tests[item.nodeid] = {
                    "file": item.nodeid.split("::")[0],
                    "time": round(time.perf_counter() - started, 3),
                    "calls": sorted(_Calls.current),
                }
                _Calls.current = None

        def pytest_sessionfinish(self, session):
            worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
            out.mkdir(parents=True, exist_ok=True)
            payload = {"tests": _Calls.tests, "collection": sorted(_Calls.collection)}
            (out / f"{worker}.json").write_text(json.dumps(payload))

    return Recorder()


if os.environ.get(PROFILE_ENV) and os.environ.get(PROBED_ENV):
    # Imported by pytest as a plugin (-p mutation), before any conftest imports a module.
    _install_probes(Path.cwd(), os.environ[PROBED_ENV].split(os.pathsep))


@dataclass
class CallMap:
    """What the baseline ran: per test node id its file, seconds and the package
    functions (``file:first line``) it called; what ran at collection."""

    tests: dict[str, dict]
    collection: set[str]

    @classmethod
    def read(cls, directory: Path) -> CallMap:
        tests: dict[str, dict] = {}
        collection: set[str] = set()
        for part in sorted(directory.glob("*.json")):
            data = json.loads(part.read_text())
            tests.update(data["tests"])
            collection.update(data["collection"])
        return cls(tests, collection)

    def file_times(self) -> dict[str, float]:
        times: dict[str, float] = defaultdict(float)
        for test in self.tests.values():
            times[test["file"]] += test["time"]
        return dict(times)


# --------------------------------------------------------------------------- scopes


@dataclass(frozen=True)
class Scope:
    """A function of the module: its code object's first line (decorators included) and
    the lines of its body. A mutant in the body runs only when the function is called."""

    name: str
    first: int
    body: tuple[int, int]


def scopes_of(source: str) -> list[Scope]:
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            assert node.end_lineno is not None
            out.append(Scope(node.name, first, (node.body[0].lineno, node.end_lineno)))
    return out


def innermost(scopes: list[Scope], lines: tuple[int, int]) -> Scope | None:
    inside = [s for s in scopes if s.body[0] <= lines[0] and lines[1] <= s.body[1]]
    return min(inside, key=lambda s: s.body[1] - s.body[0], default=None)


def changed_lines(original: str, current: str) -> tuple[int, int]:
    """First and last line of `original` (1-based) that `current` changes."""
    import difflib

    a, b = original.splitlines(), current.splitlines()
    spans = [
        (i1 + 1, max(i1 + 1, i2))
        for tag, i1, i2, _, _ in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
        if tag != "equal"
    ]
    if not spans:
        return (0, 0)
    return (min(s[0] for s in spans), max(s[1] for s in spans))


def selection(
    module: str, source: str, calls: CallMap, files: list[str], depth: dict[str, int]
) -> dict:
    """What a mutant of `module` runs, by where it is: for a function's body, the tests
    that called the function; for anything else (module level, a function run at
    collection), every test of `files` -- those calling into the module first."""
    rank = {f: i for i, f in enumerate(files)}

    def order(ids) -> list[str]:
        return sorted(
            ids,
            key=lambda t: (depth.get(calls.tests[t]["file"], 99), calls.tests[t]["time"], t),
        )

    def seconds(ids) -> float:
        return round(sum(calls.tests[t]["time"] for t in ids), 2)

    prefix = f"{module}:"
    touching = [t for t, v in calls.tests.items() if any(k.startswith(prefix) for k in v["calls"])]
    in_files = [t for t, v in calls.tests.items() if v["file"] in rank]
    module_tests = order(touching) + order(set(in_files) - set(touching))
    scopes = []
    for scope in scopes_of(source):
        key = f"{module}:{scope.first}"
        at_collection = key in calls.collection
        tests = (
            [] if at_collection else order(t for t in touching if key in calls.tests[t]["calls"])
        )
        scopes.append(
            {
                **asdict(scope),
                "at_collection": at_collection,
                "tests": tests,
                "seconds": seconds(tests),
            }
        )
    return {
        "module": module,
        "module_tests": module_tests,
        "module_seconds": seconds(module_tests),
        "scopes": scopes,
    }


# --------------------------------------------------------------------------- pytest runs


def build_pytest_cmd(targets: list[str], *extra: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *extra, *targets]


TIMEOUT_MARK = "mutation: timeout"
NO_CALLER_MARK = "mutation: no test calls"


def run_tests_for_mutant(select_path: Path) -> int:
    """The test command of every mutant (run by a worker in its copy, the mutant applied):
    find where the module differs from the original, pick that scope's tests, run them
    under this mutant's own timeout. Exit 0: survived; non-zero: killed."""
    import psutil

    select = json.loads(select_path.read_text())
    module = select["module"]
    original = Path(select["original"]).read_text()
    lines = changed_lines(original, Path(module).read_text())
    scopes = [Scope(s["name"], s["first"], tuple(s["body"])) for s in select["scopes"]]
    scope = innermost(scopes, lines) if lines != (0, 0) else None
    info = next((s for s in select["scopes"] if scope and s["first"] == scope.first), None)
    if info is None or info["at_collection"]:
        where, tests, seconds = "module level", select["module_tests"], select["module_seconds"]
        if info is not None:
            where = f"{info['name']} (runs at collection)"
    else:
        where, tests, seconds = info["name"], info["tests"], info["seconds"]
        if not tests:
            print(f"{NO_CALLER_MARK} {where} (line {lines[0]})", flush=True)
            return 0
    if not tests:
        print(f"{NO_CALLER_MARK} {PACKAGE} (no fast-lane test imports the module)", flush=True)
        return 0
    limit = select["factor"] * (seconds + select["startup_s"]) + select["extra_s"]
    print(f"mutation: {len(tests)} tests for {where} (line {lines[0]}), limit {limit:.0f} s")
    sys.stdout.flush()
    proc = subprocess.Popen(build_pytest_cmd(tests, "--tb=line"))
    try:
        return proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        family = [psutil.Process(proc.pid)]
        with contextlib.suppress(psutil.NoSuchProcess):
            family += family[0].children(recursive=True)
        for p in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        proc.wait()
        print(f"{TIMEOUT_MARK} after {limit:.0f} s", flush=True)
        return 3


def run_baseline(
    copy: Path, files: list[str], modules: list[str], workers: int, out_dir: Path, limit_s: float
) -> CallMap:
    """Run `files` unmutated in `copy`, recording which functions of `modules` each test
    calls. Raises on any failure."""
    calls_dir = out_dir / "calls"
    extra = ["--tb=short", "-p", "mutation"]
    if workers > 1:
        extra += ["-n", str(workers), "--dist", "loadfile"]
    cmd = build_pytest_cmd(files, *extra)
    env = {
        PROFILE_ENV: str(calls_dir),
        PROBED_ENV: os.pathsep.join(modules),
        "PYTHONPATH": os.pathsep.join([str(copy), str(copy / "tests")]),
    }
    log = out_dir / "baseline.log"
    code = run_logged(cmd, copy, log, limit_s, env)
    if code is None:
        raise IsolationError(
            f"the baseline took over {limit_s:.0f} s (baseline_timeout_s); see {log}. "
            "A slow or unfinished test file can be left out with --skip-tests GLOB."
        )
    if code != 0:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise IsolationError(f"the baseline failed in {copy} ({shlex.join(cmd)}):\n{tail}")
    return CallMap.read(calls_dir)


def run_logged(
    cmd: list[str], copy: Path, log: Path, limit_s: float, env: dict[str, str] | None = None
) -> int | None:
    """Run `cmd` in `copy` with the copy's environment, output to `log`; its exit code,
    or None when it ran over `limit_s` (then its whole process group is killed)."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=copy,
            env={**copy_env(copy), **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            return proc.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise


class IsolationError(RuntimeError):
    """The copies cannot be trusted: the baseline fails, or a canary was not killed."""


def check_imports_from(copy: Path) -> str:
    """Where `e2i_platform` (and a module of it) is imported from in the copy's environment."""
    probe = (
        "import e2i_platform, e2i_platform.lib.gate_results as m; "
        "print(e2i_platform.__file__); print(m.__file__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=copy, env=copy_env(copy), capture_output=True, text=True
    )
    paths = out.stdout.split()
    if out.returncode != 0 or len(paths) != 2:
        raise IsolationError(f"cannot import {PACKAGE} in {copy}: {out.stderr[-2000:]}")
    for path in paths:
        if not Path(path).resolve().is_relative_to(copy.resolve()):
            raise IsolationError(f"{PACKAGE} is imported from {path}, not from the copy {copy}")
    return paths[0]


def mutant_command(select_path: Path) -> list[str]:
    """A mutant's test command, run in a copy: the copy's own driver (frozen with it)."""
    return [sys.executable, "tests/mutation.py", "--run-tests", str(select_path)]


def run_canary(copy: Path, module: str, select_path: Path, limit_s: float) -> float:
    """Append a `raise` to `module` in `copy` and run a mutant's test command: it must fail
    with the canary's message (so the copy is what is imported, and the module-level
    tests import the module). Returns the seconds the run took."""
    path = copy / module
    original = path.read_bytes()
    log = copy.parent / f"canary-{short(module).replace('/', '__')}.log"
    try:
        path.write_bytes(original + f"\nraise RuntimeError({CANARY!r})\n".encode())
        started = time.monotonic()
        code = run_logged(mutant_command(select_path), copy, log, limit_s)
        took = time.monotonic() - started
    finally:
        path.write_bytes(original)
    if code is None or code == 0 or CANARY not in log.read_text():
        raise IsolationError(
            f"the canary in {short(module)} was not killed in {copy} (exit {code}); see {log}"
        )
    return took


# --------------------------------------------------------------------------- workers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_worker(port: int) -> None:
    """A cosmic-ray http worker (its own request handler), listening on 127.0.0.1 only:
    `cosmic-ray http-worker` listens on every interface."""
    from aiohttp import web
    from cosmic_ray.distribution.http import handle_mutate_and_test

    app = web.Application()
    app.add_routes([web.post("/", handle_mutate_and_test)])
    web.run_app(app, host="127.0.0.1", port=port, print=None)


@dataclass
class Worker:
    copy: Path
    port: int
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_worker(copy: Path, log: Path) -> Worker:
    port = free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--http-worker", str(port)],
            cwd=copy,
            env=copy_env(copy),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise IsolationError(f"the worker in {copy} exited: see {log}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return Worker(copy, port, proc)
        time.sleep(0.2)
    proc.kill()
    raise IsolationError(f"the worker in {copy} did not listen on port {port}")


def stop_worker(worker: Worker) -> None:
    """Stop the worker and the test run it may have started (in its own session)."""
    import psutil

    try:
        procs = [psutil.Process(worker.proc.pid)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=5)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


# --------------------------------------------------------------------------- filters


def _char_col(line: str, byte_col: int) -> int:
    return len(line.encode()[:byte_col].decode(errors="ignore"))


def annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) positions, 1-based lines and character columns, of the annotations
    that are never evaluated: all but class-body ones (pydantic and dataclasses read
    those), in a module with ``from __future__ import annotations``."""
    tree = ast.parse(source)
    future = any(
        isinstance(n, ast.ImportFrom)
        and n.module == "__future__"
        and any(a.name == "annotations" for a in n.names)
        for n in tree.body
    )
    if not future:
        return []
    lines = source.splitlines()
    in_class: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            in_class.update(id(n) for n in node.body if isinstance(n, ast.AnnAssign))
    annotations: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
            annotations += [a.annotation for a in every if a is not None and a.annotation]
            if node.returns is not None:
                annotations.append(node.returns)
        elif isinstance(node, ast.AnnAssign) and id(node) not in in_class:
            annotations.append(node.annotation)
    spans = []
    for a in annotations:
        assert a.end_lineno is not None and a.end_col_offset is not None
        start = (a.lineno, _char_col(lines[a.lineno - 1], a.col_offset))
        end = (a.end_lineno, _char_col(lines[a.end_lineno - 1], a.end_col_offset))
        spans.append((start, end))
    return spans


def skip_reasons(module: str, source: str, items, exclusions: tuple[Exclusion, ...]) -> dict:
    """job id -> why the mutant is left out (equivalent ones only)."""
    lines = source.splitlines()
    spans = annotation_spans(source)
    mine = [e for e in exclusions if e.module == module]
    out = {}
    for item in items:
        (m,) = item.mutations
        start, end = tuple(m.start_pos), tuple(m.end_pos)
        if any(s <= start and end <= e for s, e in spans):
            out[item.job_id] = ANNOTATION_REASON
            continue
        text = lines[start[0] - 1].strip() if start[0] <= len(lines) else ""
        before = lines[start[0] - 2].strip() if 2 <= start[0] <= len(lines) + 1 else ""
        for e in mine:
            if e.previous is not None and e.previous.strip() != before:
                continue
            if e.line.strip() == text and re.fullmatch(e.operator, m.operator_name):
                out[item.job_id] = f"excluded: {e.reason}"
                break
    return out


def sample(items, limit: int, seed: int, module: str) -> list:
    """At most `limit` items, seeded: one per mutated position (in a shuffled order of
    positions) before a second at any. 0 = all."""
    if not limit or len(items) <= limit:
        return list(items)
    rng = random.Random(f"{seed}:{module}")
    by_site: dict[tuple, list] = defaultdict(list)
    for item in sorted(items, key=lambda i: _sort_key(i.mutations[0])):
        (m,) = item.mutations
        by_site[(tuple(m.start_pos), tuple(m.end_pos))].append(item)
    sites = sorted(by_site)
    rng.shuffle(sites)
    for site in sites:
        rng.shuffle(by_site[site])
    chosen = []
    while len(chosen) < limit:
        for site in sites:
            if by_site[site] and len(chosen) < limit:
                chosen.append(by_site[site].pop())
    return chosen


def _sort_key(m) -> tuple:
    return (tuple(m.start_pos), tuple(m.end_pos), m.operator_name, m.occurrence)


# --------------------------------------------------------------------------- one module


@dataclass
class Mutant:
    file: str
    line: int
    operator: str
    outcome: str  # killed | timeout | survived | error
    original: str
    mutated: str
    note: str = ""  # what the test command said it ran


@dataclass
class ModuleResult:
    module: str
    tests: list[str]  # the test files that import the module
    timeout_s: float = 0.0  # the safety net; each mutant's own limit is in its note
    generated: int = 0
    equivalent: int = 0
    not_sampled: int = 0
    killed: int = 0
    timeouts: int = 0
    survived: int = 0
    errors: int = 0
    wall_s: float = 0.0
    skipped_reasons: dict[str, int] = field(default_factory=dict)
    survivors: list[Mutant] = field(default_factory=list)
    timed_out: list[Mutant] = field(default_factory=list)
    errored: list[Mutant] = field(default_factory=list)

    @property
    def run(self) -> int:
        return self.killed + self.timeouts + self.survived

    @property
    def score(self) -> float | None:
        return None if not self.run else 100.0 * (self.killed + self.timeouts) / self.run


def mutated_line(diff: str | None) -> str:
    added = [
        line[1:].strip()
        for line in (diff or "").splitlines()
        if line.startswith("+") and not line.startswith("+++")
    ]
    return " / ".join(added)


def run_module(
    module: str,
    tests: list[str],
    select_path: Path,
    timeout: float,
    workers: list[Worker],
    settings: Settings,
    max_mutants: int,
    seed: int,
    session_dir: Path,
    results: list[ModuleResult],
) -> None:
    """Generate, filter, sample and run `module`'s mutants; count and list them in a
    result appended to `results` first (so an interrupted module is reported too)."""
    import cosmic_ray.commands
    from cosmic_ray.config import ConfigDict, serialize_config
    from cosmic_ray.plugins import get_distributor
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult

    started = time.monotonic()
    result = ModuleResult(module, tests=tests, timeout_s=round(timeout, 1))
    results.append(result)
    root = workers[0].copy
    source = (root / module).read_text()
    source_lines = source.splitlines()
    test_command = shlex.join(mutant_command(select_path))
    config = ConfigDict(
        {
            "module-path": module,
            "timeout": timeout,
            "excluded-modules": [],
            "test-command": test_command,
            "distributor": {"name": "http", "http": {"worker-urls": [w.url for w in workers]}},
        }
    )
    name = select_path.stem
    # Left for rerunning by hand: cosmic-ray exec <config> <session>, workers up.
    (session_dir / f"{name}.toml").write_text(serialize_config(config))
    session = session_dir / f"{name}.sqlite"
    with use_db(str(session), WorkDB.Mode.create) as db:
        with contextlib.chdir(root):  # module paths stay relative: each worker's own copy
            cosmic_ray.commands.init([Path(module)], db, {})
        items = db.work_items
        result.generated = len(items)
        reasons = skip_reasons(module, source, items, settings.exclusions)
        runnable = [i for i in items if i.job_id not in reasons]
        chosen = {i.job_id for i in sample(runnable, max_mutants, seed, module)}
        reasons |= {i.job_id: NOT_SAMPLED for i in runnable if i.job_id not in chosen}
        for job_id, reason in reasons.items():
            db.set_result(job_id, WorkResult(worker_outcome=WorkerOutcome.SKIPPED, output=reason))
        for reason in reasons.values():
            result.skipped_reasons[reason] = result.skipped_reasons.get(reason, 0) + 1
        result.not_sampled = result.skipped_reasons.get(NOT_SAMPLED, 0)
        result.equivalent = len(reasons) - result.not_sampled

        pending = sorted(db.pending_work_items, key=lambda i: _sort_key(i.mutations[0]))
        spec = {i.job_id: i.mutations[0] for i in items}
        done = 0
        label = f"  {short(module)}: {len(pending)} mutants, {len(tests)} test files  "
        print(label, end="", flush=True)

        def record(job_id: str, work: WorkResult) -> None:
            nonlocal done
            db.set_result(job_id, work)
            done += 1
            m = spec[job_id]
            line = m.start_pos[0]
            mutant = Mutant(
                file=module,
                line=line,
                operator=m.operator_name,
                outcome="",
                original=source_lines[line - 1].strip() if line <= len(source_lines) else "",
                mutated=mutated_line(work.diff),
                note=next(
                    (x for x in (work.output or "").splitlines() if x.startswith("mutation: ")),
                    "",
                ).removeprefix("mutation: "),
            )
            timed_out = work.output == "timeout" or TIMEOUT_MARK in (work.output or "")
            if work.worker_outcome != WorkerOutcome.NORMAL:
                mutant.outcome, mark = "error", "E"
                result.errors += 1
                result.errored.append(mutant)
            elif work.test_outcome == TestOutcome.SURVIVED:
                mutant.outcome, mark = "survived", "S"
                result.survived += 1
                result.survivors.append(mutant)
            elif work.test_outcome == TestOutcome.KILLED and timed_out:
                mutant.outcome, mark = "timeout", "T"
                result.timeouts += 1
                result.timed_out.append(mutant)
            elif work.test_outcome == TestOutcome.KILLED:
                mutant.outcome, mark = "killed", "."
                result.killed += 1
            else:  # incompetent: the test command itself could not start
                mutant.outcome, mark = "error", "E"
                result.errors += 1
                result.errored.append(mutant)
            print(mark, end="" if done % 60 else "\n    ", flush=True)

        try:
            if pending:
                distributor = get_distributor("http")
                distributor(
                    pending,
                    test_command,
                    timeout,
                    ConfigDict({"worker-urls": [w.url for w in workers]}),
                    on_task_complete=record,
                )
        finally:
            result.wall_s = round(time.monotonic() - started, 1)
        print(flush=True)
    for found in (result.survivors, result.timed_out, result.errored):
        found.sort(key=lambda m: (m.line, m.operator))
    result.wall_s = round(time.monotonic() - started, 1)


# --------------------------------------------------------------------------- reporting


def print_report(results: list[ModuleResult], threshold: float, sampling: str) -> None:
    header = ("module", "mutants", "skipped", "run", "killed", "timeout", "survived", "error")
    header += ("score", "wall s")
    rows = []
    for r in results:
        score = "-" if r.score is None else f"{r.score:.0f}%"
        if r.score is not None and r.score < threshold:
            score += " FAIL"
        rows.append(
            (
                short(r.module),
                str(r.generated),
                str(r.equivalent + r.not_sampled),
                str(r.run),
                str(r.killed),
                str(r.timeouts),
                str(r.survived),
                str(r.errors),
                score,
                f"{r.wall_s:.0f}",
            )
        )
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:-2], widths[1:-2], strict=True)]
        return "  ".join([first, *rest, cells[-2].ljust(widths[-2]), cells[-1].rjust(widths[-1])])

    for r in results:
        listed = [*r.survivors, *r.timed_out, *r.errored]
        if not listed:
            continue
        print(
            f"\n{short(r.module)}: {r.survived} survived, {r.timeouts} timed out, {r.errors} error"
        )
        for m in listed:
            tag = "" if m.outcome == "survived" else f" [{m.outcome}]"
            op = m.operator.removeprefix("core/")
            note = f"  ({m.note})" if m.note else ""
            print(f"  {short(m.file)}:{m.line}  {op}{tag}{note}")
            print(f"      - {m.original}\n      + {m.mutated}")
    print()
    print(line(header))
    for row in rows:
        print(line(row))
    print(f"\nscore = (killed + timeout) / run; threshold {threshold:g}%. {sampling}")


def write_report(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


# --------------------------------------------------------------------------- main


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def parse_args(argv: list[str], settings: Settings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--module", action="append", help="a module or package (repeatable)")
    parser.add_argument("--max-mutants", type=int, default=settings.max_mutants)
    parser.add_argument("--seed", type=int, default=settings.seed)
    default_workers = min(2, len(os.sched_getaffinity(0)))
    parser.add_argument("--workers", type=int, default=default_workers)
    parser.add_argument(
        "--skip-tests",
        action="append",
        default=[],
        metavar="GLOB",
        help="leave out test files matching GLOB (repo-relative, e.g. tests/unit/test_x.py)",
    )
    parser.add_argument("--report", type=Path, help="JSON report path")
    parser.add_argument("--keep", action="store_true", help="keep the temp copies")
    parser.add_argument(
        "--list-tests", action="store_true", help="print each module's test subset and exit"
    )
    parser.add_argument("--http-worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--run-tests", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workers < 1 or args.max_mutants < 0:
        parser.error("--workers must be >= 1 and --max-mutants >= 0")
    return args


def main(argv: list[str]) -> int:
    settings = load_settings()
    args = parse_args(argv, settings)
    if args.run_tests:
        return run_tests_for_mutant(args.run_tests)
    if args.http_worker:
        serve_worker(args.http_worker)
        return 0
    modules = expand_modules(REPO, args.module or settings.modules)
    skip = (*settings.skip_tests, *args.skip_tests)
    if args.list_tests:
        depths = import_depths(REPO, settings.lanes, skip)
        for module in modules:
            tests = subset_for(module, depths, {})
            print(f"{short(module)}: {' '.join(tests) or '(no test imports it)'}")
        return 0

    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="e2i-mutation-"))
    report_path = args.report.resolve() if args.report else work / "report.json"
    sessions = work / "sessions"
    sessions.mkdir()
    copies = [work / f"copy-{i}" for i in range(args.workers)]
    workers: list[Worker] = []
    results: list[ModuleResult] = []
    sampling = (
        f"sampling: at most {args.max_mutants} mutants per module, seed {args.seed}"
        if args.max_mutants
        else "every mutant run (no sampling)"
    )
    status, note = 0, ""
    try:
        files = tracked_files(REPO)
        print(f"==> copying {len(files)} files of {REPO} into {work} ({len(copies)} copies)")
        for copy in copies:
            copy_tree(REPO, copy, files)
        depths = import_depths(copies[0], settings.lanes, skip)
        subsets = {m: subset_for(m, depths, {}) for m in modules}
        union = sorted({t for tests in subsets.values() for t in tests})
        for copy in copies:
            where = check_imports_from(copy)
            print(f"    {copy.name}: {PACKAGE} is imported from {Path(where).parent}")
        print(f"==> baseline: {len(union)} test files, unmutated, in {copies[0].name}")
        limit = settings.baseline_timeout_s
        calls = (
            run_baseline(copies[0], union, modules, args.workers, work, limit)
            if union
            else CallMap({}, set())
        )
        times = calls.file_times()
        print(f"    passed: {len(calls.tests)} tests, {sum(times.values()):.0f} s")
        subsets = {m: subset_for(m, depths, times) for m in modules}
        selects: dict[str, Path] = {}
        (work / "select").mkdir()
        for module in modules:
            name = short(module).replace("/", "__").removesuffix(".py")
            original = work / "originals" / module
            original.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(copies[0] / module, original)
            depth = {t: d[module] for t, d in depths.items() if module in d}
            chosen = selection(module, original.read_text(), calls, subsets[module], depth)
            chosen |= {
                "original": str(original),
                "factor": settings.timeout_factor,
                "extra_s": settings.timeout_extra_s,
                "startup_s": STARTUP_GUESS_S,
            }
            selects[module] = work / "select" / f"{name}.json"
            selects[module].write_text(json.dumps(chosen, indent=1))

        print("==> canaries: each module's tests must fail on a `raise` appended to it")
        starts: dict[str, float] = {}
        lock = threading.Lock()
        free = list(copies)

        def canary(module: str) -> None:
            with lock:
                copy = free.pop()
            try:
                starts[module] = run_canary(copy, module, selects[module], limit)
            finally:
                with lock:
                    free.append(copy)

        with ThreadPoolExecutor(len(copies)) as pool:
            list(pool.map(canary, [m for m in modules if subsets[m]]))
        print(f"    killed for {len(starts)} modules ({len(modules) - len(starts)} have no tests)")

        log = work / "workers.log"
        workers = [start_worker(copy, log) for copy in copies]
        print(f"==> mutants ({sampling}); . killed  T timeout  S survived  E error")
        import asyncio

        asyncio.set_event_loop(asyncio.new_event_loop())  # the http distributor's loop
        for module in modules:
            chosen = json.loads(selects[module].read_text())
            # A start-up measured by the canary (collection up to the module's import).
            chosen["startup_s"] = round(max(STARTUP_GUESS_S, starts.get(module, 0.0)), 1)
            selects[module].write_text(json.dumps(chosen, indent=1))
            longest = chosen["module_seconds"] + chosen["startup_s"]
            # cosmic-ray's own limit is only a safety net: each mutant's test command
            # stops its tests at its own subset's limit (and says so).
            timeout = settings.timeout_factor * longest + settings.timeout_extra_s + 60
            run_module(
                module,
                subsets[module],
                selects[module],
                timeout,
                workers,
                settings,
                args.max_mutants,
                args.seed,
                sessions,
                results,
            )
    except IsolationError as exc:
        print(f"\nmutation: {exc}", file=sys.stderr)
        status, note = 2, str(exc)
    except KeyboardInterrupt:
        print("\nmutation: interrupted", file=sys.stderr)
        status, note = 130, "interrupted"
    finally:
        for worker in workers:
            stop_worker(worker)
        if not args.keep:
            for copy in copies:
                shutil.rmtree(copy, ignore_errors=True)

    wall = time.monotonic() - started
    if results:
        print_report(results, settings.threshold, sampling)
    below = [r for r in results if r.score is not None and r.score < settings.threshold]
    errors = [r for r in results if r.errors]
    if status == 0 and (below or errors):
        status = 1
    payload = {
        "ok": status == 0,
        "status": status,
        "note": note,
        "threshold": settings.threshold,
        "max_mutants": args.max_mutants,
        "seed": args.seed,
        "workers": args.workers,
        "wall_s": round(wall, 1),
        "work_dir": str(work),
        "modules": [
            {**asdict(r), "run": r.run, "score": None if r.score is None else round(r.score, 1)}
            for r in results
        ],
    }
    write_report(report_path, payload)
    print(f"report: {report_path}\nwall time: {wall / 60:.1f} min")
    if below:
        print("below the threshold: " + ", ".join(short(r.module) for r in below))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
