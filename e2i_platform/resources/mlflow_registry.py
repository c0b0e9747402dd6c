"""Which registered version is which: the aliases `challenger` (the newest candidate,
set at registration) and `champion` (moved only by a release, `promotion.release`), and
the version tags that say why: its role, the Dagster runs, the model file and training
set, each gate's verdict, the release. Logging and registering is `mlflow_models`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from e2i_platform.resources.mlflow_secrets import secret_free

CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"
# Version tags.
ROLE_TAG = "e2i.role"  # candidate, champion, former_champion
GATE_TAG_PREFIX = "e2i.gate."  # + check name: "passed" or "failed: <summary>"
RELEASE_TAG = "e2i.release_id"
RELEASE_KIND_TAG = "e2i.release_kind"
RELEASE_RUN_TAG = "e2i.release_dagster_run_id"
REUSED_IN_TAG = "e2i.reused_in_dagster_run"
FAILED_RELEASE_TAG = "e2i.release_failed"  # a release that moved champion, then failed
GATE_SUMMARY_LIMIT = 250
# Aliases and model-not-found answers of the registry that mean "not there".
_MISSING = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def gate_tag(check_name: str, passed: bool | None, summary: str | None) -> tuple[str, str]:
    """One gate's verdict as a version tag: `e2i.gate.<check>` = `passed` or
    `failed: <summary>` (at most ~250 characters)."""
    if passed:
        return GATE_TAG_PREFIX + check_name, "passed"
    text = " ".join(str(summary or "no result").split())
    if len(text) > GATE_SUMMARY_LIMIT:
        text = text[: GATE_SUMMARY_LIMIT - 3] + "..."
    return GATE_TAG_PREFIX + check_name, f"{'failed' if passed is False else 'unknown'}: {text}"


class RegistryMixin:
    """Part of `MlflowResource`: models, versions, aliases and version tags."""

    @secret_free
    def alias_version(self, alias: str) -> str | None:
        """The version holding `alias`, or None (no such alias or registered model)."""
        if not self.enabled:
            return None
        from mlflow.exceptions import MlflowException

        try:
            version = self._client().get_model_version_by_alias(self.registered_model, alias)
        except MlflowException as err:
            # no registered model: RESOURCE_DOES_NOT_EXIST; no alias: INVALID_PARAMETER_VALUE
            if err.error_code in _MISSING:
                return None
            raise
        return str(version.version)

    @secret_free
    def set_alias(self, alias: str, version: str | int | None) -> None:
        if not self.enabled or version is None:
            return None
        self._client().set_registered_model_alias(self.registered_model, alias, str(version))
        return None

    @secret_free
    def delete_alias(self, alias: str) -> None:
        """Remove the alias; a missing alias or model is not an error."""
        if not self.enabled:
            return None
        from mlflow.exceptions import MlflowException

        try:
            self._client().delete_registered_model_alias(self.registered_model, alias)
        except MlflowException as err:
            if err.error_code not in _MISSING:
                raise
        return None

    def own_version(self, tracking: Mapping[str, Any]) -> str | None:
        """The registered version of a trained model's `mlflow` record, when it is a
        version of this resource's registered model (None: tracking off, or another)."""
        version = tracking.get("model_version")
        if not self.enabled or version is None:
            return None
        if tracking.get("registered_model", self.registered_model) != self.registered_model:
            return None
        return str(version)

    @secret_free
    def version_tags(self, version: str | int | None) -> dict[str, str] | None:
        """The version's tags; None when tracking is off or there is no such version."""
        if not self.enabled or version is None:
            return None
        from mlflow.exceptions import MlflowException

        try:
            found = self._client().get_model_version(self.registered_model, str(version))
        except MlflowException as err:
            if err.error_code in _MISSING:
                return None
            raise
        return dict(found.tags)

    @secret_free
    def set_version_tags(self, version: str | int | None, tags: Mapping[str, Any]) -> None:
        if not self.enabled or version is None:
            return None
        client = self._client()
        for key, value in tags.items():
            client.set_model_version_tag(self.registered_model, str(version), key, str(value))
        return None

    @secret_free
    def aliases(self) -> dict[str, str]:
        """alias -> version of the registered model ({} when off or not registered)."""
        if not self.enabled:
            return {}
        from mlflow.exceptions import MlflowException

        try:
            model = self._client().get_registered_model(self.registered_model)
        except MlflowException as err:
            if err.error_code in _MISSING:
                return {}
            raise
        return {str(k): str(v) for k, v in sorted(model.aliases.items())}

    def register_candidate(
        self, model_uri: str | None, run_id: str | None, tags: Mapping[str, Any]
    ) -> str | None:
        """Register a newly trained model as a candidate: a new version tagged
        `e2i.role=candidate` (and the Dagster run), holding the alias `challenger`."""
        version = self.register(model_uri, run_id, {**tags, ROLE_TAG: "candidate"})
        self.set_alias(CHALLENGER_ALIAS, version)
        return version

    def keep_candidate(self, tracking: Mapping[str, Any]) -> dict:
        """A reused model is the candidate again: `challenger` moves (back) to its
        version, tagged with this Dagster run (`e2i.reused_in_dagster_run`), unless the
        version is the champion or not in this registry. Returns what was done."""
        out: dict[str, Any] = {"alias": CHALLENGER_ALIAS}
        if not self.enabled:
            return {**out, "action": "none: tracking off"}
        version = self.own_version(tracking)
        if version is None:
            why = (
                "trained with tracking off"
                if tracking.get("model_version") is None
                else f"registered as {tracking.get('registered_model')}, not {self.registered_model}"
            )
            return {**out, "action": f"not set: the reused model was {why}"}
        out["version"] = version
        if self.version_tags(version) is None:
            return {**out, "action": f"not set: version {version} is not in the registry"}
        if self.alias_version(CHAMPION_ALIAS) == version:
            return {**out, "action": f"not set: version {version} is the champion"}
        before = self.alias_version(CHALLENGER_ALIAS)
        self.set_alias(CHALLENGER_ALIAS, version)
        if self.dagster_run_id:
            self.set_version_tags(version, {REUSED_IN_TAG: self.dagster_run_id})
        if before == version:
            return {**out, "action": "kept on the reused version"}
        return {**out, "action": f"moved to the reused version from {before or '(none)'}"}

    def move_champion(self, version: str, tags: Mapping[str, Any]) -> dict:
        """`champion` to `version`, tagged `e2i.role=champion` and `tags`; the version it
        leaves is tagged `former_champion`; `challenger` is removed when it named this
        version. Returns the versions before and what happened to `challenger`."""
        before = self.alias_version(CHAMPION_ALIAS)
        challenger = self.alias_version(CHALLENGER_ALIAS)
        self.set_alias(CHAMPION_ALIAS, version)
        try:
            self.set_version_tags(version, {**tags, ROLE_TAG: "champion"})
            if before is not None and before != version:
                replaced = {ROLE_TAG: "former_champion"}
                if RELEASE_TAG in tags:
                    replaced["e2i.replaced_by_release"] = tags[RELEASE_TAG]
                self.set_version_tags(before, replaced)
        except Exception:
            # Not half-moved: champion stays where it was, so a retry starts from there.
            if before is None:
                self.delete_alias(CHAMPION_ALIAS)
            else:
                self.set_alias(CHAMPION_ALIAS, before)
            raise
        removed = challenger if challenger == str(version) else None
        if removed:
            self.delete_alias(CHALLENGER_ALIAS)
            left = f"removed (was version {challenger})"
        else:
            left = f"version {challenger}" if challenger else "none"
        return {"from_version": before, "challenger": left, "challenger_removed": removed}

    @secret_free
    def undo_champion(self, moved: Mapping[str, Any], release_id: str) -> None:
        """Put the aliases back where `move_champion` found them (`moved`: what it
        returned, with `to_version`) when the release that moved them was not published:
        `champion` to the version before (or no champion), `challenger` back if it was
        removed; the version that was to be champion is a candidate again, tagged with
        the release that failed (`e2i.release_failed`)."""
        before, version = moved.get("from_version"), str(moved["to_version"])
        if before is not None and before != version:
            self.set_alias(CHAMPION_ALIAS, before)
            self.set_version_tags(before, {ROLE_TAG: "champion"})
        elif before is None:
            self.delete_alias(CHAMPION_ALIAS)
        if before != version:
            self.set_version_tags(version, {ROLE_TAG: "candidate", FAILED_RELEASE_TAG: release_id})
        if moved.get("challenger_removed"):
            self.set_alias(CHALLENGER_ALIAS, moved["challenger_removed"])
