"""Typed shape of config/alerts.yaml: who hears about a closed gate, a stale feature
view or a failed run, and how.

Secrets never appear in the file: a channel names the environment variables that
hold its webhook URL or SMTP password, read when an alert is sent.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebhookChannel(_Strict):
    """An HTTP POST of JSON: `slack` sends Slack's incoming-webhook shape (`text` and
    `blocks`), `webhook` the whole alert as a document."""

    kind: Literal["slack", "webhook"]
    url_env: str = Field(pattern=ENV_NAME)


class EmailChannel(_Strict):
    """Mail through an SMTP server; `host` empty: not configured."""

    kind: Literal["email"]
    host: str | None = None
    port: int = Field(587, ge=1, le=65535)
    starttls: bool = True
    username_env: str | None = Field(None, pattern=ENV_NAME)
    password_env: str | None = Field(None, pattern=ENV_NAME)
    sender: str = "e2i-platform@localhost"
    recipients: list[str] = []

    @field_validator("recipients", mode="before")
    @classmethod
    def _split(cls, value):
        # From the environment the list is one comma-separated string.
        if value is None:
            return []
        if isinstance(value, str):
            return [r.strip() for r in value.split(",") if r.strip()]
        return value

    @model_validator(mode="after")
    def _addressed(self):
        if self.host and not self.recipients:
            raise ValueError("an e-mail channel with a host needs recipients")
        return self


Channel = Annotated[WebhookChannel | EmailChannel, Field(discriminator="kind")]


class DeliverySettings(_Strict):
    attempts: int = Field(3, ge=1, le=10)
    first_wait_seconds: float = Field(1.0, ge=0, le=30)
    timeout_seconds: float = Field(5.0, gt=0, le=60)


class Routes(_Strict):
    """Channel names per route: ERROR gates, stale or unknown freshness and failed or
    refused runs page; WARN notifies."""

    page: list[str] = []
    notify: list[str] = []


class AlertSettings(_Strict):
    ui_base_url: str = "http://127.0.0.1:3000"
    sensor_interval_seconds: int = Field(30, ge=5, le=3600)
    reminder_minutes: float = Field(240, gt=0)
    # When alerting first starts (no cursor yet), failed runs older than this are history.
    first_start_lookback_minutes: float = Field(60, ge=0)
    delivery: DeliverySettings = DeliverySettings()
    channels: dict[str, Channel] = {}
    routes: Routes = Routes()

    @model_validator(mode="after")
    def _routes_name_channels(self):
        for route in ("page", "notify"):
            unknown = sorted(set(getattr(self.routes, route)) - set(self.channels))
            if unknown:
                raise ValueError(
                    f"routes.{route}: unknown channel(s) {unknown}; known: {sorted(self.channels)}"
                )
        return self
