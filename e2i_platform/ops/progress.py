"""`make run`'s progress: a line per finished step while the run goes, not only a
summary at the end.

The run executes in a run worker process (`ops.launch`) and writes its events to the
instance. A background thread reads the run's new events from the event log (the
records the UI shows) and prints a line per materialized asset (its step's wall
time and row count), per gate that did not pass (severity and its evidence, on one
line), and per failed step. Plain lines, so a log file reads like the terminal.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid

LAUNCH_TAG = "e2i/launch"  # finds this make run's run in the instance
POLL_SECONDS = 0.5


def one_line(text: str | None) -> str:
    """A message on one line, whole: its lines joined (a first line alone can end on a
    colon whose subject is on the next)."""
    return " ".join(line.strip() for line in (text or "").splitlines() if line.strip())


def failure_text(error) -> str:
    """A step's error as a person needs it: the user code's exception (Dagster wraps it
    in "Error occurred while executing op ...:", whose subject is in the cause)."""
    if error is None:
        return "no error recorded"
    while error.cause is not None and "DagsterExecutionStepExecutionError" in (
        error.cls_name or ""
    ):
        error = error.cause
    text = one_line(error.message)
    qualified, sep, rest = text.partition(": ")
    if sep and qualified.endswith(f".{error.cls_name}"):
        # Ours and dg.Failure are written for people: no class. Others keep a short one.
        ours = qualified.startswith("e2i_platform.") or error.cls_name == "Failure"
        text = rest if ours else f"{error.cls_name}: {rest}"
    return text


def event_line(event) -> str | None:
    """The progress line of one Dagster event, or None for events it does not show."""
    if event.is_step_materialization:
        mat = event.event_specific_data.materialization
        meta = mat.metadata
        parts = []
        if "step_seconds" in meta:
            parts.append(f"{meta['step_seconds'].value:.1f} s")
        if "dagster/row_count" in meta:
            parts.append(f"{meta['dagster/row_count'].value:,} rows")
        detail = f"  ({', '.join(parts)})" if parts else ""
        return f"done   {mat.asset_key.to_user_string()}{detail}"
    if event.event_type_value == "ASSET_CHECK_EVALUATION":
        ev = event.event_specific_data
        if ev.passed:
            return None
        label = f"{ev.asset_key.to_user_string()}.{ev.check_name}"
        return f"FAIL   {label} ({ev.severity.value}): {one_line(ev.description)}"
    if event.is_step_failure:
        return f"FAILED {event.step_key}: {failure_text(event.step_failure_data.error)}"
    if event.event_type_value == "ENGINE_EVENT" and (event.message or "").startswith(
        "Step blocked by limit for pool "
    ):
        # Another run writes the same store (lib.pools): say why nothing moves.
        pool = event.message.rsplit(" ", 1)[-1]
        return f"WAIT   {event.step_key}: pool {pool} is held by another run; waiting for it"
    return None


class Progress:
    """Prints the progress lines of the run tagged `LAUNCH_TAG=<self.launch_id>`."""

    def __init__(self, instance, out=None, interval: float = POLL_SECONDS):
        self.instance, self.out, self.interval = instance, out or sys.stdout, interval
        self.launch_id = uuid.uuid4().hex
        self._started = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="make-run-progress", daemon=True)
        self._run_id: str | None = None
        self._cursor: str | None = None

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._drain()  # what the run wrote after the last poll

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._drain()

    def _drain(self) -> None:
        import dagster as dg
        from dagster._core.events import DagsterEventType

        if self._run_id is None:
            records = self.instance.get_run_records(
                dg.RunsFilter(tags={LAUNCH_TAG: self.launch_id}), limit=1
            )
            if not records:
                return
            self._run_id = records[0].dagster_run.run_id
        shown = {
            DagsterEventType.ASSET_MATERIALIZATION,
            DagsterEventType.ASSET_CHECK_EVALUATION,
            DagsterEventType.STEP_FAILURE,
        }
        while True:
            page = self.instance.get_records_for_run(
                self._run_id, cursor=self._cursor, of_type=shown, limit=200
            )
            for record in page.records:
                event = record.event_log_entry.dagster_event
                if event is not None and (line := event_line(event)):
                    elapsed = time.perf_counter() - self._started
                    print(f"  [{elapsed:6.1f}s] {line}", file=self.out, flush=True)
            self._cursor = page.cursor
            if not page.has_more:
                return
