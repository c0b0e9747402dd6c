"""Alerts that reach a person: Slack-compatible webhook, JSON webhook and e-mail.

An `Alert` is built by the alert sensor (ops.alert_sensor); `NotifierResource` sends it
on the channels of its route (config/alerts.yaml), trying each send a few times with
doubling waits. It never raises on a channel that cannot be reached: it reports, per
channel, what happened, so the sensor can log it, queue it and name it in the next
alert. Secrets (webhook URLs carry tokens, SMTP passwords) are read from the
environment at send time and never appear in a message, a log line or an error.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

import dagster as dg

from e2i_platform.resources.config import ConfigResource

REPORT_HINT = "Run costs and failing gates: `make report` (README, Run-cost report)"
TITLE_PREFIX = {"page": "[E2I PAGE]", "notify": "[E2I NOTICE]"}
STATE_WORD = {"firing": "FAILING", "reminder": "STILL FAILING", "recovered": "RECOVERED"}


@dataclass(frozen=True)
class Alert:
    """One message about one failing thing (a gate on a materialization, a feature view,
    a run), in one state: firing, reminder or recovered."""

    key: str  # the thing's identity, e.g. "check:online_features/freshness"
    kind: str  # gate, freshness, run, escalation
    state: str  # firing, reminder, recovered
    severity: str  # ERROR or WARN
    subject: str  # e.g. "gate validated_patients/schema_valid"
    what: str  # what failed, in one sentence
    evidence: list[str] = field(default_factory=list)
    asset: str | None = None
    check: str | None = None
    run_id: str | None = None
    url: str | None = None
    since: str | None = None  # when the current failing streak began (ISO, UTC)
    at: str = ""  # when this message was made
    notes: list[str] = field(default_factory=list)  # e.g. earlier alerts not delivered

    @property
    def route(self) -> str:
        return "page" if self.severity == "ERROR" else "notify"

    @property
    def title(self) -> str:
        return (
            f"{TITLE_PREFIX[self.route]} {STATE_WORD[self.state]}: {self.subject} ({self.severity})"
        )

    def text(self) -> str:
        lines = [self.title, f"What: {self.what}"]
        if self.evidence:
            lines += ["Evidence:", *(f"  - {e}" for e in self.evidence)]
        where = [f"asset {self.asset}"] if self.asset else []
        where += [f"check {self.check}"] if self.check else []
        if where:
            lines.append("Where: " + ", ".join(where))
        lines.append(f"Run: {self.run_id}" if self.run_id else "Run: none (evaluated by a sensor)")
        if self.since:
            lines.append(f"Failing since: {self.since}")
        if self.url:
            lines.append(f"Open: {self.url}")
        lines += [f"Note: {n}" for n in self.notes]
        lines.append(REPORT_HINT)
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {**asdict(self), "route": self.route, "title": self.title}

    @classmethod
    def from_dict(cls, data: dict) -> Alert:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


class ChannelUnavailable(Exception):
    """A channel is configured but the send did not get through."""


def _where(url: str) -> str:
    """A webhook's host and port only: the path of a Slack URL is its secret."""
    parts = urlsplit(url)
    return parts.netloc.rpartition("@")[2] or "(no host)"


def _post_json(url: str, document: dict, timeout: float) -> None:
    from urllib.error import HTTPError, URLError
    from urllib.request import Request, urlopen

    body = json.dumps(document).encode()
    request = Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urlopen(request, timeout=timeout) as response:
            response.read()
    except HTTPError as exc:
        raise ChannelUnavailable(f"{_where(url)} answered HTTP {exc.code}") from None
    except (URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ChannelUnavailable(f"{_where(url)} unreachable: {reason}") from None


def _slack_document(alert: Alert) -> dict:
    text = alert.text()
    return {
        "text": alert.title,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text[:2900]}}],
    }


def _send_mail(channel, alert: Alert, timeout: float) -> None:
    import smtplib
    from email.message import EmailMessage

    message = EmailMessage()
    message["Subject"] = alert.title
    message["From"] = channel.sender
    message["To"] = ", ".join(channel.recipients)
    message["X-E2I-Alert-Key"] = alert.key
    message["X-E2I-Alert-State"] = alert.state
    message.set_content(alert.text())
    try:
        with smtplib.SMTP(channel.host, channel.port, timeout=timeout) as smtp:
            if channel.starttls:
                smtp.starttls()
            user = os.environ.get(channel.username_env or "")
            if user:
                smtp.login(user, os.environ.get(channel.password_env or "", ""))
            smtp.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        # The exception text of a failed login can echo the user name, never the password.
        raise ChannelUnavailable(
            f"SMTP {channel.host}:{channel.port}: {type(exc).__name__}: {exc}"
        ) from None


class NotifierResource(dg.ConfigurableResource):
    """Sends alerts on the channels config/alerts.yaml routes them to."""

    e2i_config: ConfigResource

    def settings(self):
        return self.e2i_config.settings().alerts

    def not_configured(self, name: str) -> str | None:
        """Why channel `name` cannot send (its variable or host is unset); None if it can."""
        channel = self.settings().channels[name]
        if channel.kind == "email":
            return None if channel.host else "its SMTP host (E2I_SMTP_HOST) is not set"
        return None if os.environ.get(channel.url_env) else f"{channel.url_env} is not set"

    def channels_for(self, alert: Alert) -> list[str]:
        return list(getattr(self.settings().routes, alert.route))

    def send(self, name: str, alert: Alert) -> None:
        """Send on one channel, with the configured attempts; `ChannelUnavailable` when
        every attempt failed."""
        cfg = self.settings()
        channel, delivery = cfg.channels[name], cfg.delivery
        wait = delivery.first_wait_seconds
        for attempt in range(1, delivery.attempts + 1):
            try:
                if channel.kind == "email":
                    _send_mail(channel, alert, delivery.timeout_seconds)
                else:
                    url = os.environ[channel.url_env]
                    document = (
                        _slack_document(alert) if channel.kind == "slack" else alert.as_dict()
                    )
                    _post_json(url, document, delivery.timeout_seconds)
                return
            except ChannelUnavailable as exc:
                if attempt == delivery.attempts:
                    raise ChannelUnavailable(
                        f"channel {name}: {exc} (after {attempt} attempts)"
                    ) from None
                time.sleep(wait)
                wait *= 2

    def deliver(self, alert: Alert) -> dict[str, str]:
        """Send on every channel of the alert's route: per channel `sent`, `not
        configured: <why>` or `failed: <why>`."""
        outcome = {}
        for name in self.channels_for(alert):
            why = self.not_configured(name)
            if why:
                outcome[name] = f"not configured: {why}"
                continue
            try:
                self.send(name, alert)
                outcome[name] = "sent"
            except ChannelUnavailable as exc:
                outcome[name] = f"failed: {exc}"
        return outcome
