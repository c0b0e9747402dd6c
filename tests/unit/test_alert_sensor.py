"""The alert sensor against real receivers: a local HTTP server for the Slack-compatible
and JSON webhooks, aiosmtpd for the mails, real runs on a real instance.

A gate made to fail (a duplicate key in a landing file) pages once on every channel;
ten more ticks send nothing; a reminder comes after the configured interval; the fix
brings exactly one recovery. A failing channel is retried, logged, named in the next
alert and delivered late; secrets in webhook URLs appear nowhere.
"""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
import time_machine

from e2i_platform.resources.notifier import Alert
from e2i_platform.settings import load_settings

from receivers import MailReceiver, WebhookReceiver
from support import definitions, edit_yaml, evaluations, materialized, run, write_landing

SECRET = "T0001/B0002/s3cr3tt0k3n"


@pytest.fixture
def receivers(e2i_home, config_copy, monkeypatch):
    hooks, mail = WebhookReceiver(), MailReceiver()
    monkeypatch.setenv("E2I_SLACK_WEBHOOK_URL", hooks.url(f"/slack/{SECRET}"))
    monkeypatch.setenv("E2I_ALERT_WEBHOOK_URL", hooks.url("/hook"))
    monkeypatch.setenv("E2I_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("E2I_SMTP_PORT", str(mail.port))
    monkeypatch.setenv("E2I_SMTP_STARTTLS", "false")
    monkeypatch.setenv("E2I_ALERT_TO", "oncall@example.com")
    edit_yaml(config_copy, "alerts", ("delivery", "first_wait_seconds"), 0.01)
    edit_yaml(config_copy, "alerts", ("delivery", "timeout_seconds"), 2)
    yield hooks, mail
    hooks.stop()
    mail.stop()


def _tick(defs, instance, cursor):
    sensor = defs.resolve_sensor_def("alert_sensor")
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=defs.resources, definitions=defs
    ) as context:
        result = sensor.evaluate_tick(context)
    return result.cursor, result.skip_message


def _bad_hcps(e2i_home, generated):
    hcps = generated.table("hcp_profiles").copy()
    hcps.loc[1, "hcp_id"] = hcps.loc[0, "hcp_id"]  # a duplicate primary key
    return write_landing(e2i_home, "hcp_profiles", hcps)


SELECTION = dg.AssetSelection.assets("raw_hcp_profiles", "hcp_profiles")


def _slack_titles(hooks) -> list[str]:
    return [body["text"] for body in hooks.on(f"/slack/{SECRET}")]


def test_a_failing_gate_pages_once_reminds_and_recovers_once(
    receivers, e2i_home, generated, instance
):
    hooks, mail = receivers
    defs = definitions(load_settings())
    landing = _bad_hcps(e2i_home, generated)
    failed = run(defs, instance, selection=SELECTION)
    assert not evaluations(failed)["raw_hcp_profiles.schema"].passed
    assert "hcp_profiles" not in materialized(failed)  # the gate blocked downstream

    cursor, message = _tick(defs, instance, None)
    titles = _slack_titles(hooks)
    gate_title = "[E2I PAGE] FAILING: gate raw_hcp_profiles/schema (ERROR)"
    assert titles.count(gate_title) == 1, titles
    run_titles = [t for t in titles if t.startswith("[E2I PAGE] FAILING: run ")]
    assert len(run_titles) == 1 and "raw_hcp_profiles" in run_titles[0]
    assert "2 alert(s)" in message

    # The JSON document: what, evidence, where, run and link.
    (gate,) = [d for d in hooks.on("/hook") if d["kind"] == "gate"]
    assert gate["state"] == "firing" and gate["route"] == "page"
    assert gate["asset"] == "raw_hcp_profiles" and gate["check"] == "schema"
    assert gate["run_id"] == failed.run_id
    assert gate["url"] == f"http://127.0.0.1:3000/runs/{failed.run_id}"
    assert any("failing rule" in e and "hcp_id" in e for e in gate["evidence"]), gate
    assert any(e.startswith("rows checked 40, failing ") for e in gate["evidence"]), gate
    (refused,) = [d for d in hooks.on("/hook") if d["kind"] == "run"]
    assert refused["run_id"] == failed.run_id
    assert any("launched by" in e for e in refused["evidence"])

    # The mail: same subject, the text with the evidence and the link.
    subjects = [m["Subject"] for m in mail.messages]
    assert subjects.count(gate_title) == 1
    body = next(m for m in mail.messages if m["Subject"] == gate_title).get_payload()
    assert f"/runs/{failed.run_id}" in body and "make report" in body
    assert "Failing since: " in body

    # Ten more ticks: nothing new anywhere.
    counts = (len(hooks.received), len(mail.messages))
    for _ in range(10):
        cursor, message = _tick(defs, instance, cursor)
        assert message.startswith("0 alert(s)"), message
    assert (len(hooks.received), len(mail.messages)) == counts

    # Still failing after the reminder interval (240 min): one reminder, once.
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=241)):
        cursor, _ = _tick(defs, instance, cursor)
        cursor, _ = _tick(defs, instance, cursor)
    reminders = [t for t in _slack_titles(hooks) if "STILL FAILING" in t]
    assert reminders == ["[E2I PAGE] STILL FAILING: gate raw_hcp_profiles/schema (ERROR)"]

    # Fixed: one recovery for the gate, one for the run's work; then silence.
    landing.unlink()
    fixed = run(defs, instance, selection=SELECTION)
    assert fixed.success
    cursor, _ = _tick(defs, instance, cursor)
    cursor, _ = _tick(defs, instance, cursor)
    recovered = [t for t in _slack_titles(hooks) if "RECOVERED" in t]
    assert sorted(recovered) == sorted(
        [
            "[E2I PAGE] RECOVERED: gate raw_hcp_profiles/schema (ERROR)",
            run_titles[0]
            .replace("FAILING", "RECOVERED")
            .replace(" was refused", "")
            .replace(" failed", ""),
        ]
    ), recovered
    assert sum("RECOVERED" in m["Subject"] for m in mail.messages) == 2


def test_an_unreachable_channel_is_retried_logged_named_and_delivered_late(
    receivers, e2i_home, generated, instance, capfd
):
    hooks, mail = receivers
    defs = definitions(load_settings())
    _bad_hcps(e2i_home, generated)
    run(defs, instance, selection=SELECTION)

    hooks.status = 500  # both webhooks answer 500; mail still works
    capfd.readouterr()
    cursor, message = _tick(defs, instance, None)
    assert hooks.received == [] and len(mail.messages) == 2
    assert "pending" in message and json.loads(cursor)["pending"]
    logged = capfd.readouterr().err  # the sensor's own log (its console logger)
    assert "alert not delivered on slack" in logged and "answered HTTP 500" in logged
    assert "after 3 attempts" in logged
    assert SECRET not in logged and SECRET not in cursor

    # Still down: nothing lost, nothing sent twice by mail.
    cursor, _ = _tick(defs, instance, cursor)
    assert len(mail.messages) == 2 and len(json.loads(cursor)["pending"]) == 4

    # Back up: the queued alerts arrive, marked delayed, and the queue empties.
    hooks.status = 200
    cursor, message = _tick(defs, instance, cursor)
    assert json.loads(cursor)["pending"] == []
    assert len(hooks.on("/hook")) == 2 and len(_slack_titles(hooks)) == 2
    assert all(any(n.startswith("delayed: ") for n in d["notes"]) for d in hooks.on("/hook"))


def test_the_next_alert_names_undelivered_ones(receivers, e2i_home, generated, instance):
    hooks, mail = receivers
    defs = definitions(load_settings())
    landing = _bad_hcps(e2i_home, generated)
    run(defs, instance, selection=SELECTION)
    mail.stop()  # the SMTP port now refuses connections
    cursor, _ = _tick(defs, instance, None)
    landing.unlink()
    run(defs, instance, selection=SELECTION)
    cursor, _ = _tick(defs, instance, cursor)
    recovery = next(d for d in hooks.on("/hook") if d["state"] == "recovered")
    assert (
        "2 earlier alert(s) not yet delivered to channel email (retried every tick)"
        in (recovery["notes"])
    )


def test_warn_notifies_without_paging(receivers, e2i_home):
    hooks, mail = receivers
    notifier = definitions(load_settings()).resources["notifier"]
    alert = Alert(
        key="check:online_features/freshness",
        kind="freshness",
        state="firing",
        severity="WARN",
        subject="freshness online_features/freshness",
        what="feature freshness warning",
    )
    outcome = notifier.deliver(alert)
    assert outcome == {"slack": "sent", "webhook": "sent"}
    assert _slack_titles(hooks) == [
        "[E2I NOTICE] FAILING: freshness online_features/freshness (WARN)"
    ]
    assert mail.messages == []  # e-mail is on the page route only


def test_unset_channels_are_named_not_silently_skipped(e2i_home, monkeypatch):
    for name in ("E2I_SLACK_WEBHOOK_URL", "E2I_ALERT_WEBHOOK_URL", "E2I_SMTP_HOST"):
        monkeypatch.delenv(name, raising=False)
    notifier = definitions(load_settings()).resources["notifier"]
    alert = Alert(key="k", kind="run", state="firing", severity="ERROR", subject="s", what="w")
    assert notifier.deliver(alert) == {
        "slack": "not configured: E2I_SLACK_WEBHOOK_URL is not set",
        "webhook": "not configured: E2I_ALERT_WEBHOOK_URL is not set",
        "email": "not configured: its SMTP host (E2I_SMTP_HOST) is not set",
    }


def test_failed_runs_from_before_alerting_started_are_history(
    receivers, e2i_home, generated, instance
):
    hooks, _ = receivers
    defs = definitions(load_settings())
    _bad_hcps(e2i_home, generated)
    with time_machine.travel(datetime.now(UTC) - timedelta(hours=3)):
        run(defs, instance, selection=SELECTION)
    _tick(defs, instance, None)
    kinds = [d["kind"] for d in hooks.on("/hook")]
    # The gate still fails now: alerted whatever its age. The 3-hour-old run is not news.
    assert kinds == ["gate"]


def test_a_run_refused_by_a_closed_gate_pages_as_refused_naming_the_gate(
    receivers, e2i_home, generated, instance
):
    hooks, _ = receivers
    defs = definitions(load_settings())
    _bad_hcps(e2i_home, generated)
    run(defs, instance, selection=SELECTION)
    cursor, _ = _tick(defs, instance, None)
    hooks.received.clear()

    # A later run of the downstream asset alone: the guard refuses it.
    refused = run(defs, instance, selection=dg.AssetSelection.assets("hcp_profiles"))
    assert not refused.success and "hcp_profiles" not in materialized(refused)
    _tick(defs, instance, cursor)
    (page,) = [d for d in hooks.on("/hook") if d["kind"] == "run"]
    assert (
        page["title"]
        == "[E2I PAGE] FAILING: run __ephemeral_asset_job__ [hcp_profiles] was refused (ERROR)"
    )
    assert page["run_id"] == refused.run_id
    (step,) = [e for e in page["evidence"] if e.startswith("step hcp_profiles: ")]
    assert "refused to run" in step and "(closed gates: schema on raw_hcp_profiles)" in step
    (why,) = [e for e in page["evidence"] if e.startswith("  gate schema on raw_hcp_profiles: ")]
    assert "its latest result is FAILED (ERROR)" in why and "field_uniqueness" in why, why
    # The gate itself was already alerted: its evaluation is not news again.
    assert [d for d in hooks.on("/hook") if d["kind"] == "gate"] == []


def test_a_tick_during_the_run_does_not_lose_the_evaluation_that_follows(receivers, instance):
    import threading

    hooks, _ = receivers
    release = threading.Event()

    @dg.asset(name="slow_table")
    def slow_table() -> int:
        return 1

    @dg.asset_check(asset=slow_table, name="slow_gate", blocking=True)
    def slow_gate() -> dg.AssetCheckResult:
        release.wait(timeout=60)  # the sensor ticks while this check is planned
        return dg.AssetCheckResult(passed=False, description="slow gate failed")

    defs = dg.Definitions.merge(
        definitions(load_settings()),
        dg.Definitions(assets=[slow_table], asset_checks=[slow_gate]),
    )
    worker = threading.Thread(
        target=dg.materialize,
        args=([slow_table, slow_gate],),
        kwargs={"instance": instance, "raise_on_error": False},
    )
    worker.start()
    key = dg.AssetCheckKey(dg.AssetKey("slow_table"), "slow_gate")
    storage = instance.event_log_storage
    for _ in range(200):
        if key in storage.get_latest_asset_check_execution_by_key([key]):
            break
        threading.Event().wait(0.05)
    cursor, _ = _tick(defs, instance, None)  # the execution is planned, not evaluated
    assert hooks.on("/hook") == []
    release.set()
    worker.join(timeout=60)
    _tick(defs, instance, cursor)
    gates = [d for d in hooks.on("/hook") if d["kind"] == "gate"]
    assert [(d["check"], d["state"], d["what"]) for d in gates] == [
        ("slow_gate", "firing", "slow gate failed")
    ]


def test_a_warning_notifies_and_its_recovery_stays_on_the_notify_route(receivers, instance):
    hooks, mail = receivers
    state = {"passed": False}

    @dg.asset(name="warned_table")
    def warned_table() -> int:
        return 1

    @dg.asset_check(asset=warned_table, name="soft_gate")
    def soft_gate() -> dg.AssetCheckResult:
        if state["passed"]:  # as lib.gate_results passes: with its default severity, ERROR
            return dg.AssetCheckResult(passed=True, description="soft")
        return dg.AssetCheckResult(
            passed=False, severity=dg.AssetCheckSeverity.WARN, description="soft"
        )

    defs = dg.Definitions.merge(
        definitions(load_settings()),
        dg.Definitions(assets=[warned_table], asset_checks=[soft_gate]),
    )
    dg.materialize([warned_table, soft_gate], instance=instance)
    cursor, _ = _tick(defs, instance, None)
    state["passed"] = True
    dg.materialize([warned_table, soft_gate], instance=instance)
    _tick(defs, instance, cursor)
    soft = [d for d in hooks.on("/hook") if d["check"] == "soft_gate"]
    assert [(d["state"], d["route"]) for d in soft] == [
        ("firing", "notify"),
        ("recovered", "notify"),
    ]
    assert _slack_titles(hooks) == [
        "[E2I NOTICE] FAILING: gate warned_table/soft_gate (WARN)",
        "[E2I NOTICE] RECOVERED: gate warned_table/soft_gate (WARN)",
    ]
    assert mail.messages == []  # e-mail is on the page route only
