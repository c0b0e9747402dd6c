"""What a step cost: wall seconds and peak resident memory, as materialization metadata.

A step's clock and memory peak start when it first touches its data (the IO
manager loading its first input, or the body of an asset that loads nothing) and
are read when its value is written (or its body returns a result without one),
so the figures cover reading, computing and writing. The peak is the kernel's
high-water mark of this process (VmHWM), reset at the step's start through
/proc/self/clear_refs: exact for a step running alone in its process, which is so
for both executors the platform uses (in-process runs steps one after another; the
multiprocess executor gives each step its own process). Where the mark cannot be
reset, the figure is the process's lifetime peak and the metadata says so. Before
the clock starts, memory Arrow kept from earlier steps is handed back.
"""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_STARTED: dict[tuple[str, str], tuple[float, bool]] = {}


def release_free_memory() -> None:
    """Hand memory Arrow's allocator keeps from earlier steps back to the system, so one
    step's peak is not every later step's floor. Not gc.collect() nor malloc_trim: in a
    long-lived process (a test session) each costs 0.2-1 s per step."""
    import sys

    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()


def _reset_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")  # 5: reset the peak RSS to the current RSS
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """This process's peak resident set size since the last reset (or since it started)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def start(run_id: str, step_key: str, clock: bool = True) -> None:
    """Start the step's clock and memory peak, once per step; `clock=False`: the peak
    only (a step that reports its own seconds, e.g. hpo_study's whole graph)."""
    if (run_id, step_key) in _STARTED:
        return
    if len(_STARTED) > 1000:  # steps that failed never finished: keep this bounded
        _STARTED.clear()
    release_free_memory()
    _STARTED[(run_id, step_key)] = (time.perf_counter() if clock else None, _reset_peak())


def finish(run_id: str, step_key: str) -> dict[str, dg.MetadataValue]:
    """The step's cost so far as metadata; the step's clock stops."""
    started, reset = _STARTED.pop((run_id, step_key), (None, False))
    metadata = {"step_peak_rss_mib": dg.MetadataValue.float(round(peak_rss_mib(), 1))}
    if started is not None:
        metadata["step_seconds"] = dg.MetadataValue.float(round(time.perf_counter() - started, 3))
    if not reset:
        metadata["step_peak_rss_scope"] = dg.MetadataValue.text(
            "process lifetime: this system cannot reset the peak per step"
        )
    return metadata


def start_step(context) -> None:
    step = context.get_step_execution_context()
    start(step.run_id, step.step.key)


def finish_step(context) -> dict[str, dg.MetadataValue]:
    step = context.get_step_execution_context()
    return finish(step.run_id, step.step.key)
