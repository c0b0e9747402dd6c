"""The `make test` driver: run the test lanes one pytest subprocess at a time.

    python tests/lanes.py [--tests-dir DIR] [--report PATH] [lane ...]

Lanes default to ``preflight release unit integration e2e distributed``, in that order. Each
lane is a separate ``python -m pytest <tests-dir>/<lane>`` process (the release
lane: the must-pass tests listed in ``<tests-dir>/release.txt``, which the later
lanes then skip, through ``lane_plugin``), so the memory one
lane used is returned to the OS before the next starts. Within a lane,
pytest-xdist workers are sized to the memory available at that moment
(``E2I_TEST_WORKERS`` overrides), and the peak RSS of the whole process tree is
measured so the budgets below can be checked against reality.

Real PostgreSQL and Redis come from ``services.ensure_services()`` once, right
before the first lane that needs them (release, integration, e2e, distributed), so preflight runs
before any service is started; their URLs are passed to the lanes after it. Before the
integration lane, ``services.ensure_chromium()`` installs Debian's chromium and
chromium-driver when missing (the release report's browser test).

Verdicts: a lane fails when pytest fails, collects nothing (exit 5), or -- in
the integration and e2e lanes -- skips anything, because a skipped integration
test is a test that did not prove anything. A failed preflight stops the run:
the later lanes are reported as not run (and failed) unless ``--keep-going`` is
given. Any other failure lets the remaining lanes run, so the report is complete. The report table is followed by a last
line ``{P} passed, {F} failed[, {S} skipped]`` where F counts failed and
errored tests plus one for each lane that failed without a failing test (so
``0 failed`` always means success). The same figures go to a JSON report.
Exit status: 0 if every lane passed, 1 otherwise, 130 when interrupted.

Environment: ``E2I_TEST_WORKERS`` (worker count for parallel lanes),
``E2I_TEST_PYTEST_ARGS`` (extra pytest arguments, shell-quoted, e.g. ``-x -k redis``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import IO

import psutil

if __package__:
    from .services import ServicesUnavailable, ensure_chromium, ensure_services, mask_url
else:  # run as a script: this directory is sys.path[0]
    from services import ServicesUnavailable, ensure_chromium, ensure_services, mask_url

HERE = Path(__file__).resolve().parent
MIB = 1024**2
GIB = 1024**3
# Left for the OS, the database and cache servers, and this driver.
MEMORY_RESERVE = 1 * GIB
POLL_INTERVAL_S = 0.15
WORKERS_ENV = "E2I_TEST_WORKERS"
PYTEST_ARGS_ENV = "E2I_TEST_PYTEST_ARGS"
RAN_ENV = "E2I_TEST_RAN"  # read by lane_plugin


@dataclass(frozen=True)
class Budget:
    per_worker: int | None  # bytes one xdist worker may use; None: the lane never runs in parallel
    max_workers: int | None = None
    # How xdist hands out tests: "loadfile" keeps a file on one worker, so a module-scoped
    # fixture is built once; "worksteal" splits files, so one long file does not hold
    # one worker while the other idles (for lanes whose tests share no fixture).
    dist: str = "loadfile"


BUDGETS: dict[str, Budget] = {
    "preflight": Budget(per_worker=None),
    # The must-pass list (release.txt): real pipelines, each on its own home and instance;
    # split by test: a few e2e files are most of it (by file it took 243 s, by test 127 s).
    "release": Budget(per_worker=int(1.2 * GIB), dist="worksteal"),
    "unit": Budget(per_worker=700 * MIB),
    "integration": Budget(per_worker=900 * MIB, dist="worksteal"),
    # Whole pipelines, each on its own home, instance and SQLite stores (no shared server).
    "e2e": Budget(per_worker=int(1.2 * GIB), dist="worksteal"),
    # One test: the whole graph on two Celery workers with the shared services (an S3
    # server, an MLflow server, PostgreSQL, Redis) started by the test: ~3 GiB on its own.
    "distributed": Budget(per_worker=None),
}
DEFAULT_LANES = ("preflight", "release", "unit", "integration", "e2e", "distributed")
NEEDS_SERVICES = frozenset({"release", "integration", "e2e", "distributed"})
NO_SKIP_LANES = frozenset({"release", "integration", "e2e", "distributed"})
NEEDS_CHROMIUM = frozenset({"integration"})  # the release report's browser test
RELEASE_LIST = "release.txt"  # in the tests directory: the release lane's tests


def release_entries(tests_dir: Path) -> list[str]:
    """The release list's entries (`<lane>/<file>[::<test>]`), comments and blanks dropped."""
    lines = (tests_dir / RELEASE_LIST).read_text().splitlines()
    return [entry for line in lines if (entry := line.split("#", 1)[0].strip())]


@dataclass
class LaneResult:
    lane: str
    workers: int
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    wall_s: float = 0.0
    peak_tree_rss_mib: float = 0.0
    peak_process_rss_mib: float = 0.0
    exit_code: int | None = None
    ok: bool = False
    status: str = "not run"

    @property
    def failure_count(self) -> int:
        """Failed + errored tests, or 1 for a lane that failed without a failing test."""
        failing = self.failed + self.errors
        return failing if (failing or self.ok) else 1


class LaneInterrupted(KeyboardInterrupt):
    """Ctrl-C during a lane; carries what was measured up to then, for the report."""

    def __init__(self, result: LaneResult) -> None:
        super().__init__(result.lane)
        self.result = result


# --------------------------------------------------------------------------- sizing


def available_memory() -> int:
    """Bytes new processes can use: the machine's figure, or the container's if tighter."""
    available = int(psutil.virtual_memory().available)
    headroom = cgroup_headroom()
    return available if headroom is None else min(available, headroom)


CGROUP_ROOT = Path("/sys/fs/cgroup")
# (controller directory under the root, limit file, usage file, reclaimable key in memory.stat)
_V2 = ("", "memory.max", "memory.current", "inactive_file")
_V1 = ("memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")


def own_cgroups(proc_cgroup: str) -> dict[str, str]:
    """This process's cgroup paths from /proc/self/cgroup: {"v2": path, "v1": path}."""
    out = {}
    for line in proc_cgroup.splitlines():
        number, controllers, path = line.split(":", 2)
        if number == "0" and controllers == "":
            out["v2"] = path
        elif "memory" in controllers.split(","):
            out["v1"] = path
    return out


def _headroom_at(directory: Path, limit_name: str, usage_name: str, key: str) -> int | None:
    try:
        limit_text = (directory / limit_name).read_text().strip()
        usage = int((directory / usage_name).read_text())
        stat = (directory / "memory.stat").read_text()
    except (OSError, ValueError):
        return None
    if limit_text == "max" or int(limit_text) >= 2**60:  # v1 spells "no limit" as ~2**63
        return None
    # Page cache counts as usage but is given back on demand.
    match = re.search(rf"^{key} (\d+)$", stat, re.MULTILINE)
    reclaimable = int(match.group(1)) if match else 0
    return max(0, int(limit_text) - usage + reclaimable)


def cgroup_headroom(root: Path = CGROUP_ROOT, proc_cgroup: str | None = None) -> int | None:
    """Bytes this process's cgroup lets it still use: the tightest headroom of its own
    cgroup and every ancestor (a limit set on a parent binds a nested child), v2 or v1.
    Inside a container /proc/meminfo shows the host; the real limit is here. A path
    /proc/self/cgroup names that is not under the mount (a cgroup namespace shows the
    container's own cgroup as the root) is read from the mount's root."""
    if proc_cgroup is None:
        try:
            proc_cgroup = Path("/proc/self/cgroup").read_text()
        except OSError:
            proc_cgroup = ""
    paths = own_cgroups(proc_cgroup)
    found = []
    for version, (sub, limit_name, usage_name, key) in (("v2", _V2), ("v1", _V1)):
        base = root / sub if sub else root
        own = base / paths.get(version, "/").lstrip("/")
        directory = own if own.is_dir() else base
        while True:
            headroom = _headroom_at(directory, limit_name, usage_name, key)
            if headroom is not None:
                found.append(headroom)
            if directory == base:
                break
            directory = directory.parent
    return min(found) if found else None


def choose_workers(lane: str) -> tuple[int, str]:
    """Worker count for ``lane`` and a short explanation of how it was chosen."""
    budget = BUDGETS[lane]
    if budget.per_worker is None:
        return 1, "serial lane"
    override = os.environ.get(WORKERS_ENV)
    if override:
        workers, why = int(override), f"{WORKERS_ENV}={override}"
    else:
        cores = len(os.sched_getaffinity(0))
        free = available_memory()
        workers = max(1, min(cores, (free - MEMORY_RESERVE) // budget.per_worker))
        why = (
            f"{free / GIB:.1f} GiB available, {cores} cores, "
            f"{budget.per_worker / MIB:.0f} MiB per worker"
        )
    if budget.max_workers is not None and workers > budget.max_workers:
        workers, why = budget.max_workers, f"{why}; lane capped at {budget.max_workers}"
    if workers > 1 and importlib.util.find_spec("xdist") is None:
        workers, why = 1, f"{why}; pytest-xdist is not installed"
    return workers, why


# --------------------------------------------------------------------------- running


class TreeMeter:
    """Tracks peak RSS of a process and all its descendants, summed and per process."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.seen: dict[int, psutil.Process] = {}
        self.peak_tree = 0
        self.peak_process = 0

    def tree(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def sample(self) -> None:
        total = 0
        for proc in self.tree():
            self.seen.setdefault(proc.pid, proc)
            try:
                rss = proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue  # exited between listing and reading
            total += rss
            self.peak_process = max(self.peak_process, rss)
        self.peak_tree = max(self.peak_tree, total)

    def kill_all(self) -> None:
        """Terminate the tree, including descendants already orphaned, then kill stragglers."""
        procs = {p.pid: p for p in [*self.seen.values(), *self.tree()] if p.is_running()}
        for proc in procs.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.terminate()
        _, alive = psutil.wait_procs(list(procs.values()), timeout=5)
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()


def _tee(source: IO[bytes], tail: bytearray, limit: int = 64 * 1024) -> None:
    """Copy pytest's output to our stdout as it comes, keeping the end for parsing."""
    out = sys.stdout.buffer
    while chunk := os.read(source.fileno(), 65536):
        out.write(chunk)
        out.flush()
        tail.extend(chunk)
        del tail[:-limit]


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SUMMARY = re.compile(r"^=*\s*(?P<counts>.+?) in [\d.]+s\b")
_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?)")


def parse_summary(output: str) -> dict[str, int] | None:
    """Counts from pytest's final line, e.g. ``12 passed, 1 failed, 2 skipped in 3.4s``."""
    for line in reversed(_ANSI.sub("", output).splitlines()):
        match = _SUMMARY.match(line.strip())
        if not match:
            continue
        counts = {kind.rstrip("s"): int(n) for n, kind in _COUNT.findall(match["counts"])}
        if counts or match["counts"] == "no tests ran":
            return counts
    return None


def lane_targets(lane: str, tests_dir: Path, cwd: Path) -> list[str] | str:
    """What pytest runs for ``lane`` (its directory, or the release list's entries), or
    why it cannot run."""
    if lane == "release":
        try:
            entries = release_entries(cwd / tests_dir)
        except OSError as exc:
            return f"no release list: {exc}"
        missing = [e for e in entries if not (cwd / tests_dir / e.split("::")[0]).is_file()]
        if missing or not entries:
            return (
                f"release list names missing files {missing}" if missing else "empty release list"
            )
        return [str(tests_dir / e) for e in entries]
    if not (cwd / tests_dir / lane).is_dir():
        # pytest-xdist reports a missing path as "no tests ran", which hides the cause.
        return f"no directory {tests_dir / lane}"
    return [str(tests_dir / lane)]


def run_lane(lane: str, tests_dir: Path, cwd: Path, env: dict[str, str]) -> LaneResult:
    """Run one lane's pytest in ``cwd`` (``tests_dir`` is relative to it), measuring its tree."""
    targets = lane_targets(lane, tests_dir, cwd)
    if isinstance(targets, str):
        return LaneResult(lane, workers=0, status=f"FAILED ({targets})")
    workers, why = choose_workers(lane)
    cmd = [sys.executable, "-m", "pytest", *targets, "-p", "no:cacheprovider", "-q"]
    if env.get(RAN_ENV):
        cmd += ["-p", "lane_plugin"]  # deselects what the release lane ran
    if workers > 1:
        cmd += ["-n", str(workers), "--dist", BUDGETS[lane].dist]
    if sys.stdout.isatty():
        cmd.append("--color=yes")  # pytest sees a pipe, not our terminal
    cmd += shlex.split(os.environ.get(PYTEST_ARGS_ENV, ""))
    print(f"\n==> {lane}: {workers} worker(s) ({why})\n    {shlex.join(cmd)}", flush=True)

    result = LaneResult(lane=lane, workers=workers)
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    meter = TreeMeter(proc.pid)
    tail = bytearray()
    reader = threading.Thread(target=_tee, args=(proc.stdout, tail), daemon=True)
    reader.start()
    try:
        while proc.poll() is None:
            meter.sample()
            time.sleep(POLL_INTERVAL_S)
    except KeyboardInterrupt:
        meter.kill_all()
        with contextlib.suppress(subprocess.TimeoutExpired, ChildProcessError):
            proc.wait(timeout=5)
        result.status = "interrupted"
        raise LaneInterrupted(result) from None
    finally:
        reader.join(timeout=5)
        result.wall_s = round(time.monotonic() - started, 2)
        result.peak_tree_rss_mib = round(meter.peak_tree / MIB, 1)
        result.peak_process_rss_mib = round(meter.peak_process / MIB, 1)

    result.exit_code = proc.returncode
    counts = parse_summary(tail.decode(errors="replace"))
    if counts is not None:
        result.passed = counts.get("passed", 0)
        result.failed = counts.get("failed", 0)
        result.errors = counts.get("error", 0)
        result.skipped = counts.get("skipped", 0)
    judge(result, summary_found=counts is not None)
    return result


def judge(result: LaneResult, *, summary_found: bool) -> None:
    """Set ``ok`` and ``status``: pytest's verdict plus this project's stricter rules."""
    reasons = []
    if result.exit_code == 5:
        reasons.append("no tests collected")
    elif result.exit_code not in (0, 1):
        reasons.append(f"pytest exit {result.exit_code}")  # interrupted, internal or usage error
    elif result.exit_code == 1 and not (result.failed or result.errors):
        reasons.append("pytest exit 1")
    if not summary_found:
        reasons.append("no pytest summary line")
    if result.lane in NO_SKIP_LANES and result.skipped:
        reasons.append(f"{result.skipped} skipped; this lane may not skip")
    result.ok = result.exit_code == 0 and not reasons
    if result.ok:
        result.status = "passed"
    else:
        result.status = "FAILED" + (f" ({'; '.join(reasons)})" if reasons else "")


# --------------------------------------------------------------------------- reporting


def print_table(results: list[LaneResult]) -> None:
    header = (
        "lane",
        "workers",
        "passed",
        "failed",
        "skipped",
        "wall s",
        "peak tree MiB",
        "peak proc MiB",
        "status",
    )
    rows = [
        (
            r.lane,
            str(r.workers),
            str(r.passed),
            str(r.failed + r.errors),
            str(r.skipped),
            f"{r.wall_s:.1f}",
            f"{r.peak_tree_rss_mib:.0f}",
            f"{r.peak_process_rss_mib:.0f}",
            r.status,
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]

    def line(cells: tuple[str, ...]) -> str:
        # Lane name left-aligned, figures right-aligned, status free-form at the end.
        first = cells[0].ljust(widths[0])
        figures = [cell.rjust(width) for cell, width in zip(cells[1:-1], widths[1:], strict=True)]
        return "  ".join([first, *figures, cells[-1]])

    print()
    print(line(header))
    for row in rows:
        print(line(row))


def write_report(
    path: Path,
    results: list[LaneResult],
    totals: dict[str, int],
    ok: bool,
    services: dict[str, str],
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "ok": ok,
        "totals": totals,
        "services": {name: mask_url(url) for name, url in services.items()},
        "lanes": [{**asdict(r), "failure_count": r.failure_count} for r in results],
    }
    path.write_text(json.dumps(report, indent=2) + "\n")


# --------------------------------------------------------------------------- main


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so `kill` cleans up exactly as Ctrl-C does


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "lanes", nargs="*", metavar="lane", help=f"default: {' '.join(DEFAULT_LANES)}"
    )
    parser.add_argument(
        "--tests-dir", default="tests", type=Path, help="holds one directory per lane"
    )
    parser.add_argument(
        "--report", default=".e2i/test-report.json", type=Path, help="JSON report path"
    )
    parser.add_argument(
        "--keep-going", action="store_true", help="run the other lanes after a failed preflight"
    )
    args = parser.parse_args(argv)
    args.lanes = args.lanes or list(DEFAULT_LANES)
    unknown = [lane for lane in args.lanes if lane not in BUDGETS]
    if unknown:
        parser.error(f"unknown lane(s) {', '.join(unknown)}; choose from {', '.join(BUDGETS)}")
    workers = os.environ.get(WORKERS_ENV, "")
    if workers and not (workers.isdigit() and int(workers) >= 1):
        parser.error(f"{WORKERS_ENV} must be a positive integer, not {workers!r}")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    repo_root = Path(__file__).resolve().parent.parent
    report_path = repo_root / args.report  # an absolute --report stays as given
    signal.signal(signal.SIGTERM, _interrupt)

    results: list[LaneResult] = []
    interrupted = False
    # Unbuffered: lane output is piped through us and should appear as it happens.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    service_urls: dict[str, str] = {}
    stopped = ""  # why the remaining lanes do not run
    with contextlib.ExitStack() as services:
        lane = ""
        try:
            services_error, started = None, False
            for lane in args.lanes:
                if stopped:
                    results.append(LaneResult(lane, workers=0, status=f"not run ({stopped})"))
                    continue
                if lane in NEEDS_SERVICES and not started:
                    started = True
                    try:
                        service_urls = services.enter_context(ensure_services())
                        env.update(service_urls)
                    except ServicesUnavailable as exc:
                        services_error = str(exc)
                        print(f"services unavailable:\n{exc}", file=sys.stderr, flush=True)
                if lane in NEEDS_SERVICES and services_error:
                    results.append(
                        LaneResult(lane, workers=0, status="FAILED (services unavailable)")
                    )
                    continue
                if lane in NEEDS_CHROMIUM:
                    try:
                        ensure_chromium()  # installs Debian's chromium + chromium-driver
                    except ServicesUnavailable as exc:
                        print(f"chromium unavailable:\n{exc}", file=sys.stderr, flush=True)
                        results.append(
                            LaneResult(lane, workers=0, status="FAILED (chromium unavailable)")
                        )
                        continue
                results.append(run_lane(lane, args.tests_dir, repo_root, env))
                if lane == "preflight" and not results[-1].ok and not args.keep_going:
                    stopped = "preflight failed; --keep-going runs it anyway"
                if lane == "release" and results[-1].workers:
                    # Later lanes skip these tests: they ran (and count) here. An absolute
                    # --tests-dir stays as given.
                    targets = lane_targets(lane, args.tests_dir, repo_root)
                    env[RAN_ENV] = "\n".join(str(repo_root / t) for t in targets)
                    env["PYTHONPATH"] = os.pathsep.join(
                        p for p in (str(HERE), env.get("PYTHONPATH", "")) if p
                    )
        except LaneInterrupted as exc:
            interrupted = True
            results.append(exc.result)
        except KeyboardInterrupt:  # while starting services or between lanes
            interrupted = True
            results.append(LaneResult(lane or "services", workers=0, status="interrupted"))
    # The `with` above has stopped any private servers by now.

    totals = {
        "passed": sum(r.passed for r in results),
        "failed": sum(r.failure_count for r in results),
        "skipped": sum(r.skipped for r in results),
    }
    ok = not interrupted and all(r.ok for r in results)
    print_table(results)
    write_report(report_path, results, totals, ok, service_urls)
    print(f"report: {report_path}")
    skipped = f", {totals['skipped']} skipped" if totals["skipped"] else ""
    if stopped:
        print("preflight failed: the later lanes did not run (--keep-going runs them)")
    print(f"{totals['passed']} passed, {totals['failed']} failed{skipped}", flush=True)
    if interrupted:
        return 130
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
