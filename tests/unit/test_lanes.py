"""The `make test` driver itself: memory sizing from the process's own cgroup (v1 and
v2, nested), the verdict rules (a skip in an integration lane fails it), the summary
line, and a failed preflight stopping the later lanes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import lanes

GIB = 1024**3
TESTS = Path(__file__).resolve().parents[1]


def _v2(directory: Path, limit: str, usage: int, inactive: int = 0) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "memory.max").write_text(f"{limit}\n")
    (directory / "memory.current").write_text(f"{usage}\n")
    (directory / "memory.stat").write_text(f"anon 1\ninactive_file {inactive}\n")


def _v1(directory: Path, limit: int, usage: int, inactive: int = 0) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "memory.limit_in_bytes").write_text(f"{limit}\n")
    (directory / "memory.usage_in_bytes").write_text(f"{usage}\n")
    (directory / "memory.stat").write_text(f"cache 5\ntotal_inactive_file {inactive}\n")


def test_v2_reads_the_processs_own_nested_cgroup_and_its_tightest_ancestor(tmp_path):
    _v2(tmp_path, "max", 10 * GIB)  # the root: no limit
    _v2(tmp_path / "ci.slice", str(4 * GIB), 1 * GIB, inactive=GIB // 2)
    _v2(tmp_path / "ci.slice" / "job-7", "max", 1 * GIB)
    proc = "0::/ci.slice/job-7\n"
    # The limit is set on the parent: 4 GiB - 1 GiB used + 0.5 GiB reclaimable.
    assert lanes.cgroup_headroom(tmp_path, proc) == int(3.5 * GIB)
    # A tighter limit on the job itself wins.
    _v2(tmp_path / "ci.slice" / "job-7", str(2 * GIB), 1 * GIB)
    assert lanes.cgroup_headroom(tmp_path, proc) == 1 * GIB
    # Reading only the root (the old behaviour) would have seen no limit at all.
    assert lanes.cgroup_headroom(tmp_path, "0::/\n") is None


def test_v1_reads_the_memory_controllers_path(tmp_path):
    unlimited = 2**63 - 4096
    _v1(tmp_path / "memory", unlimited, 3 * GIB)
    _v1(tmp_path / "memory" / "docker" / "abc", 4 * GIB, 3 * GIB)
    proc = "12:pids:/docker/abc\n4:cpu,memory:/docker/abc\n1:name=systemd:/\n"
    assert lanes.own_cgroups(proc) == {"v1": "/docker/abc"}
    assert lanes.cgroup_headroom(tmp_path, proc) == 1 * GIB
    # A path the namespace hides (not under the mount): the mount's root is the cgroup.
    _v1(tmp_path / "memory", 6 * GIB, 2 * GIB)
    assert lanes.cgroup_headroom(tmp_path, "4:memory:/elsewhere/xyz\n") == 4 * GIB


def test_no_cgroup_files_means_no_limit(tmp_path):
    assert lanes.cgroup_headroom(tmp_path, "0::/\n") is None


def _result(lane, exit_code, **counts):
    result = lanes.LaneResult(lane=lane, workers=1, exit_code=exit_code, **counts)
    lanes.judge(result, summary_found=True)
    return result


def test_a_skip_fails_an_integration_lane_but_not_the_unit_lane():
    assert _result("unit", 0, passed=3, skipped=1).ok
    e2e = _result("e2e", 0, passed=3, skipped=1)
    assert not e2e.ok and "1 skipped; this lane may not skip" in e2e.status
    assert e2e.failure_count == 1  # counted as a failure though no test failed
    empty = _result("unit", 5)
    assert not empty.ok and "no tests collected" in empty.status


def test_the_summary_line_counts_every_kind():
    out = (
        "....\n\x1b[32m== 12 passed, 1 failed, 2 skipped, 3 errors, 4 warnings in 3.40s ==\x1b[0m\n"
    )
    assert lanes.parse_summary(out) == {
        "passed": 12,
        "failed": 1,
        "skipped": 2,
        "error": 3,
        "warning": 4,
    }
    assert lanes.parse_summary("no summary here") is None


def _lane_dirs(root: Path, preflight_passes: bool) -> None:
    # The lanes' tests check what the driver hands every lane: unbuffered output.
    unbuffered = "import os\ndef test_{}():\n    assert os.environ['PYTHONUNBUFFERED'] == '{}'\n"
    for lane, body in (
        ("preflight", unbuffered.format("preflight", "1" if preflight_passes else "no")),
        ("unit", unbuffered.format("unit", "1")),
    ):
        (root / lane).mkdir(parents=True)
        (root / lane / f"test_{lane}.py").write_text(body)


def _drive(root: Path, *extra: str) -> subprocess.CompletedProcess:
    # The driver as a developer starts it: not with the arguments or the release list
    # this suite was started with (`E2I_TEST_PYTEST_ARGS="-k redis"` would leave these
    # lanes empty); one worker, since starting xdist nodes is most of the time here.
    env = {k: v for k, v in os.environ.items() if k not in ("E2I_TEST_PYTEST_ARGS", "E2I_TEST_RAN")}
    return subprocess.run(
        [sys.executable, str(TESTS / "lanes.py"), "--tests-dir", str(root)]
        + ["--report", str(root / "report.json"), *extra, "preflight", "unit"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "E2I_TEST_WORKERS": "1"},
    )


@pytest.mark.parametrize("keep_going", [False, True])
def test_a_failed_preflight_stops_the_later_lanes_unless_keep_going(tmp_path, keep_going):
    _lane_dirs(tmp_path, preflight_passes=False)
    done = _drive(tmp_path, *(["--keep-going"] if keep_going else []))
    assert done.returncode == 1, done.stdout
    unit_line = next(line for line in done.stdout.splitlines() if line.startswith("unit "))
    if keep_going:
        assert unit_line.endswith("passed") and "==> unit:" in done.stdout
        assert done.stdout.rstrip().endswith("1 passed, 1 failed")
    else:
        assert "not run (preflight failed" in unit_line and "==> unit:" not in done.stdout
        assert "preflight failed: the later lanes did not run" in done.stdout
        assert done.stdout.rstrip().endswith("0 passed, 2 failed")


def test_a_passing_preflight_lets_the_lanes_run(tmp_path):
    _lane_dirs(tmp_path, preflight_passes=True)
    done = _drive(tmp_path)
    assert done.returncode == 0, done.stdout
    assert done.stdout.rstrip().endswith("2 passed, 0 failed")


def test_the_lanes_after_release_skip_what_it_ran(tmp_path):
    """lane_plugin deselects the release list's entries by file and name (a parametrized
    test's name covers its cases), whatever rootdir pytest picks."""
    lane = tmp_path / "unit"
    lane.mkdir()
    # A deselected test fails if it runs; the kept one checks it sees the release list.
    (lane / "test_a.py").write_text(
        "import os, pytest\n"
        "def test_kept():\n    assert 'test_ran' in os.environ['E2I_TEST_RAN']\n"
        "@pytest.mark.parametrize('n', [1, 2])\n"
        "def test_ran(n):\n    raise AssertionError('ran in the release lane already')\n"
    )
    (lane / "test_b.py").write_text(
        "def test_whole_file():\n    raise AssertionError('ran in the release lane already')\n"
    )
    ran = f"{lane / 'test_a.py'}::test_ran\n{lane / 'test_b.py'}"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(lane),
            "-q",
            "-p",
            "lane_plugin",
            "-p",
            "no:cacheprovider",
        ],
        cwd=tmp_path,
        env={**os.environ, "E2I_TEST_RAN": ran, "PYTHONPATH": str(TESTS)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert lanes.parse_summary(done.stdout) == {"passed": 1, "deselected": 3}


def test_the_release_list_names_existing_tests():
    entries = lanes.release_entries(TESTS)
    assert entries and all((TESTS / e.split("::")[0]).is_file() for e in entries)
    assert lanes.lane_targets("release", Path("tests"), TESTS.parent) == [
        f"tests/{e}" for e in entries
    ]
