"""Optuna in MLflow: a parent run per study and one finished nested run per trial (our
own logger; Optuna's MLflowCallback is deprecated). Runs are made by `TrackingMixin`, so
each carries the Dagster run id."""

from __future__ import annotations

import time
from typing import Any

from e2i_platform.resources.mlflow_secrets import secret_free

INTERMEDIATE_METRIC = "valid_auc"
TRIAL_STATE_TAG = "optuna.state"
TRIAL_NUMBER_TAG = "optuna.trial_number"
PARENT_RUN_TAG = "mlflow.parentRunId"

# Optuna TrialState name -> MLflow RunStatus name. A pruned trial did what it was asked
# (it was stopped by design, not by a fault): FINISHED, told apart by its `optuna.state`
# tag. KILLED made half of every search look broken in the MLflow UI.
TRIAL_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED"}

# The experiment of a study's run, by (tracking URI, run id): a run never changes
# experiment, and looking it up for every trial cost one more round trip per trial.
_PARENT_EXPERIMENT: dict[tuple[str, str], str] = {}


def trial_status(state: Any) -> str:
    """MLflow run status for an Optuna trial state (a TrialState or its name)."""
    name = str(getattr(state, "name", state)).upper().rpartition(".")[2]
    try:
        return TRIAL_STATUS[name]
    except KeyError:
        raise ValueError(
            f"trial state {state!r} is not finished (expected one of {sorted(TRIAL_STATUS)})"
        ) from None


class TrialsMixin:
    """Part of `MlflowResource`: the study's run and its trials."""

    def start_study_run(self, name: str, params: dict, tags: dict) -> str | None:
        """A parent run for an Optuna study (left RUNNING; end it with `end_run`)."""
        return self.start_run(name, params, tags)

    @secret_free
    def log_trial(
        self,
        parent_run_id: str | None,
        number: int,
        params: dict,
        intermediate: list[tuple[int, float]],
        metrics: dict[str, float],
        state: Any,
    ) -> str | None:
        """One finished nested run per Optuna trial, in create_run + log_batch(es) + terminate.

        Intermediate values are the `valid_auc` history (one point per step); the final
        metrics are logged at the last step, 1 ms later, so they are the runs' latest values.
        NaN/inf values are skipped and listed in the `skipped_non_finite_metrics` tag.
        """
        if not self.enabled:
            return None
        status = trial_status(state)
        now = int(time.time() * 1000)
        history, skipped = self._metrics(
            [(INTERMEDIATE_METRIC, step, value) for step, value in intermediate], now
        )
        last_step = max((int(step) for step, _ in intermediate), default=0)
        final, skipped_final = self._metrics(metrics, now + 1, step=last_step)
        tags = {
            TRIAL_STATE_TAG: str(getattr(state, "name", state)).rpartition(".")[2],
            TRIAL_NUMBER_TAG: str(number),
            **self._skipped_tag(skipped + skipped_final),
        }
        if parent_run_id:
            tags[PARENT_RUN_TAG] = parent_run_id
        client = self._client()
        if not parent_run_id:
            experiment_id = self._experiment_id(client)
        elif (key := (self.tracking_uri, parent_run_id)) in _PARENT_EXPERIMENT:
            experiment_id = _PARENT_EXPERIMENT[key]
        else:  # once per study run, not once per trial
            experiment_id = client.get_run(parent_run_id).info.experiment_id
            _PARENT_EXPERIMENT[key] = experiment_id
        run = self._create_run(client, experiment_id, f"trial-{number}", tags)
        run_id = run.info.run_id
        try:
            self._log_batch(client, run_id, metrics=history + final, params=params)
        except Exception:
            self._terminate(client, run_id, "FAILED")
            raise
        self._terminate(client, run_id, status)
        return run_id
