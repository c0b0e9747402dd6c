"""The alert sensor: reads check evaluations and run outcomes from the event log and
tells a person (resources.notifier), once per failing thing, with reminders and a
recovery message.

It reads the instance, not a run: alerts come for UI, CLI, schedule, sensor and
`make run` runs alike, and for the evaluations the freshness sensor records between
runs. Its cursor holds what it has seen (per check, the last execution id; the run
event cursors), what is open (failing, alerted, not recovered) and what could not be
delivered yet. Rules:

- a check alerts when it fails on a materialization it has not alerted for, or when
  the failure changes in kind (WARN to ERROR, serving- to source-stale, escalated);
  the same failure evaluated again (the freshness sensor re-measures every tick) is
  not news;
- a check still failing `reminder_minutes` after its last alert is reminded of;
- a check that passes again, and a job whose same work succeeds after a failed run,
  get exactly one recovery message;
- a send that fails after its attempts is logged here, queued, retried next tick and
  named in the next alert; a channel that failed once in a tick is not tried again in
  that tick (the tick must end well inside the daemon's timeout).

Delivery is at least once: a tick that dies after sending and before its cursor is
stored sends again next tick.
"""

from __future__ import annotations

import json
import time

import dagster as dg

from e2i_platform.ops.alert_messages import check_alert, iso, run_alert, run_key
from e2i_platform.resources.notifier import Alert, NotifierResource

SENSOR = "alert_sensor"
HISTORY = 50  # evaluations of one check read per tick at most
RUN_BATCH = 100
PENDING_LIMIT = 200


def _check_label(key: dg.AssetCheckKey) -> str:
    return f"{key.asset_key.to_user_string()}/{key.name}"


def failure_identity(evaluation, target: str) -> str:
    """What makes a failure news: its materialization, severity, and the freshness
    sensor's stale kind and escalation."""
    meta = evaluation.metadata
    parts = [target, evaluation.severity.value]
    if "stale_kind" in meta:
        parts.append(f"stale_kind={meta['stale_kind'].value}")
    if "escalated" in meta and meta["escalated"].value:  # a run's check never escalates
        parts.append("escalated")
    return "|".join(parts)


def closing(recovery: Alert, opened: dict) -> Alert:
    """A recovery on the route of the alert it closes (a WARN closes on notify)."""
    return Alert.from_dict({**recovery.as_dict(), "severity": opened["alert"]["severity"]})


def _target(evaluation, record) -> str:
    data = evaluation.target_materialization_data
    if data is not None:
        return f"materialization:{data.storage_id}"
    return f"run:{record.run_id}" if record.run_id else f"evaluation:{record.id}"


class Tick:
    """One evaluation of the sensor: reads what is new and collects alerts to send."""

    def __init__(self, context, notifier: NotifierResource, state: dict, now: float):
        self.context, self.notifier, self.now = context, notifier, now
        self.instance = context.instance
        self.settings = notifier.settings()
        self.state = state
        state.setdefault("checks", {})
        state.setdefault("open", {})
        state.setdefault("pending", [])
        state.setdefault("overflow", 0)
        self.outbox: list[Alert] = []

    # --- checks --------------------------------------------------------------------

    def read_checks(self, keys: list[dg.AssetCheckKey]) -> None:
        storage = self.instance.event_log_storage
        latest = storage.get_latest_asset_check_execution_by_key(keys)
        for key, record in latest.items():
            label = _check_label(key)
            seen = self.state["checks"].get(label)
            if seen is not None and record.id <= seen:
                continue
            if seen is None:  # first sight of this check: only where it stands now
                records = [record]
            else:
                history = storage.get_asset_check_execution_history(key, limit=HISTORY)
                records = sorted((r for r in history if r.id > seen), key=lambda r: r.id)
            for r in records:
                # A planned execution is updated in place when its evaluation arrives:
                # the cursor stops before it until its run has evaluated it or ended.
                if not self.settled(r):
                    break
                self.evaluation(key, r)
                self.state["checks"][label] = r.id

    def settled(self, record) -> bool:
        """Whether an execution record will not change any more: it holds an evaluation,
        or its run ended without one (a step failed or was skipped)."""
        event = record.event.dagster_event if record.event else None
        if event is not None and event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            return True
        run = self.instance.get_run_by_id(record.run_id) if record.run_id else None
        return run is None or run.is_finished

    def evaluation(self, key: dg.AssetCheckKey, record) -> None:
        event = record.event.dagster_event if record.event else None
        if event is None or event.event_type != dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            return  # planned, or its step failed (the run alert tells that)
        evaluation = event.event_specific_data
        akey = f"check:{_check_label(key)}"
        opened = self.state["open"].get(akey)
        base = self.settings.ui_base_url
        if evaluation.passed:
            if opened:
                del self.state["open"][akey]
                alert = check_alert(
                    key, evaluation, record.run_id, "recovered", opened["since"], self.now, base
                )
                self.outbox.append(closing(alert, opened))
            return
        identity = failure_identity(evaluation, _target(evaluation, record))
        if opened and opened["identity"] == identity:
            return
        since = opened["since"] if opened else record.create_timestamp
        alert = check_alert(key, evaluation, record.run_id, "firing", since, self.now, base)
        self.state["open"][akey] = {
            "identity": identity,
            "since": since,
            "last_sent": self.now,
            "alert": alert.as_dict(),
        }
        self.outbox.append(alert)

    def reminders(self) -> None:
        due = self.settings.reminder_minutes * 60
        for akey, opened in self.state["open"].items():
            if not akey.startswith("check:") or self.now - opened["last_sent"] < due:
                continue
            if any(a.key == akey for a in self.outbox):
                continue
            alert = Alert.from_dict({**opened["alert"], "state": "reminder", "at": iso(self.now)})
            opened["last_sent"] = self.now
            self.outbox.append(alert)

    # --- runs ----------------------------------------------------------------------

    def status_changes(self, event_type, cursor_key: str) -> list:
        """The runs' status changes of `event_type` since the cursor kept under
        `cursor_key` (advanced past them)."""
        result = self.instance.fetch_run_status_changes(
            event_type, limit=RUN_BATCH, cursor=self.state.get(cursor_key), ascending=True
        )
        if result.cursor:
            self.state[cursor_key] = result.cursor
        return result.records

    def read_runs(self) -> None:
        base = self.settings.ui_base_url
        horizon = self.now - self.settings.first_start_lookback_minutes * 60
        # The cursor is absent until a failure is read: remember that alerting started.
        first = not self.state.get("runs_seen")
        self.state["runs_seen"] = True
        for record in self.status_changes(dg.DagsterEventType.RUN_FAILURE, "run_failures"):
            if first and record.timestamp < horizon:
                continue
            run = self.instance.get_run_by_id(record.run_id)
            if run is None:
                continue
            message = record.event_log_entry.dagster_event.message or ""
            alert = run_alert(
                self.instance, run, message, "firing", record.timestamp, self.now, base
            )
            self.state["open"][alert.key] = {
                "identity": run.run_id,
                "since": record.timestamp,
                "storage_id": record.storage_id,
                "last_sent": self.now,
                "alert": alert.as_dict(),
            }
            self.outbox.append(alert)
        for record in self.status_changes(dg.DagsterEventType.RUN_SUCCESS, "run_successes"):
            run = self.instance.get_run_by_id(record.run_id)
            key = run_key(self.instance, run) if run else None
            opened = self.state["open"].get(key) if key else None
            if not opened or record.storage_id < opened["storage_id"]:
                continue
            del self.state["open"][key]
            alert = run_alert(self.instance, run, "", "recovered", opened["since"], self.now, base)
            self.outbox.append(closing(alert, opened))

    # --- delivery ------------------------------------------------------------------

    def _pending_notes(self) -> list[str]:
        by_channel: dict[str, int] = {}
        for item in self.state["pending"]:
            by_channel[item["channel"]] = by_channel.get(item["channel"], 0) + 1
        notes = [
            f"{n} earlier alert(s) not yet delivered to channel {c} (retried every tick)"
            for c, n in sorted(by_channel.items())
        ]
        if self.state["overflow"]:
            notes.append(
                f"{self.state['overflow']} older undelivered alert(s) were dropped from the "
                f"retry queue (limit {PENDING_LIMIT}); see this sensor's log"
            )
        return notes

    def _queue(self, channel: str, alert: Alert, why: str) -> None:
        self.context.log.error(f"alert not delivered on {channel}: {alert.title}: {why}")
        self.state["pending"].append({"channel": channel, "alert": alert.as_dict(), "error": why})
        if len(self.state["pending"]) > PENDING_LIMIT:
            dropped = self.state["pending"].pop(0)
            self.state["overflow"] += 1
            self.context.log.error(
                f"retry queue full: dropped {dropped['alert']['title']} for {dropped['channel']}"
            )

    def retry_pending(self, down: set[str]) -> int:
        kept, sent = [], 0
        for item in self.state["pending"]:
            channel, alert = item["channel"], Alert.from_dict(item["alert"])
            if channel in down or self.notifier.not_configured(channel):
                kept.append(item)
                continue
            try:
                delayed = Alert.from_dict(
                    {**item["alert"], "notes": [*alert.notes, f"delayed: {item['error']}"]}
                )
                self.notifier.send(channel, delayed)
                sent += 1
            except Exception as exc:  # ChannelUnavailable, or a channel removed from config
                down.add(channel)
                self.context.log.error(f"retry of {alert.title} on {channel} failed: {exc}")
                kept.append(item)
        self.state["pending"] = kept
        return sent

    def send(self) -> tuple[int, int]:
        down: set[str] = set()
        retried = self.retry_pending(down)
        sent = 0
        for alert in self.outbox:
            alert = Alert.from_dict({**alert.as_dict(), "notes": self._pending_notes()})
            channels = self.notifier.channels_for(alert)
            if not channels:
                self.context.log.warning(
                    f"alert with no channel on route {alert.route}: {alert.title}"
                )
            for name in channels:
                why = self.notifier.not_configured(name)
                if why:
                    self.context.log.warning(
                        f"{alert.title}: channel {name} not configured ({why})"
                    )
                    continue
                if name in down:
                    self._queue(name, alert, "channel failed earlier in this tick")
                    continue
                try:
                    self.notifier.send(name, alert)
                    sent += 1
                    self.context.log.info(f"sent on {name}: {alert.title}")
                except Exception as exc:
                    down.add(name)
                    self._queue(name, alert, str(exc))
        return sent, retried


def alert_sensor(interval_seconds: int) -> dg.SensorDefinition:
    @dg.sensor(
        name=SENSOR,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Tells a person about failing gates, stale or unknown feature views and failed "
            "or refused runs (config/alerts.yaml): one alert per failure, reminders while it "
            "stays failing, one recovery message. Reads the event log with a cursor."
        ),
    )
    def _alert_sensor(context: dg.SensorEvaluationContext, notifier: NotifierResource):
        state = json.loads(context.cursor) if context.cursor else {}
        tick = Tick(context, notifier, state, time.time())
        keys = sorted(context.repository_def.asset_graph.asset_check_keys, key=_check_label)
        tick.read_checks(keys)
        tick.read_runs()
        tick.reminders()
        sent, retried = tick.send()
        context.update_cursor(json.dumps(state, sort_keys=True))
        titles = [a.title for a in tick.outbox]
        return dg.SkipReason(
            f"{len(titles)} alert(s), {sent} send(s), {retried} delayed send(s), "
            f"{len(state['pending'])} pending, {len(state['open'])} open"
            + (": " + "; ".join(titles) if titles else "")
        )

    return _alert_sensor
