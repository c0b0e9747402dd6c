"""MLflow experiment tracking and model registry as a resource.

Our own small resource (not dagster-mlflow, not Optuna's MLflow callback). Every call goes
through an explicit `MlflowClient(tracking_uri=..., registry_uri=...)`: the process-global
("fluent") tracking URI and active-run stack are never used, except inside `log_model`, where
MLflow's flavor API needs the global URI: it is set for that call only, under a lock, and
restored exactly (`resources.mlflow_process`).

`enabled: false` makes every method a no-op that returns None (or an empty result) without
importing MLflow or creating any file. MLflow is imported lazily, inside the methods.

Inside a Dagster run, every run the resource creates and every version it registers is
tagged `dagster.run_id` (`setup_for_execution` keeps the run id).

The resource is composed of one mixin per concern:
- `mlflow_store`: where the store is, the client, the experiment and its artifact location
  (`mlflow_artifacts`: artifact roots, a copied home re-rooted);
- `mlflow_tracking`: runs, metrics, tags, the training set as an input dataset;
- `mlflow_trials`: an Optuna study's run and one nested run per trial;
- `mlflow_models`: a LightGBM model logged and registered;
- `mlflow_registry`: aliases `challenger` / `champion` and the version tags;
- `mlflow_links`: links to the MLflow UI;
- `mlflow_secrets`: credentials kept out of error messages.
"""

from __future__ import annotations

import dagster as dg
from pydantic import PrivateAttr

from e2i_platform.resources.mlflow_links import LinksMixin
from e2i_platform.resources.mlflow_models import ModelsMixin
from e2i_platform.resources.mlflow_registry import RegistryMixin
from e2i_platform.resources.mlflow_store import StoreMixin, sqlite_path
from e2i_platform.resources.mlflow_tracking import (
    DAGSTER_RUN_TAG,
    SKIPPED_METRICS_TAG,
    TrackingMixin,
)
from e2i_platform.resources.mlflow_trials import TRIAL_NUMBER_TAG, TRIAL_STATE_TAG, TrialsMixin

__all__ = [
    "DAGSTER_RUN_TAG",
    "SKIPPED_METRICS_TAG",
    "TRIAL_NUMBER_TAG",
    "TRIAL_STATE_TAG",
    "MlflowResource",
    "sqlite_path",
]


class MlflowResource(
    StoreMixin,
    TrackingMixin,
    TrialsMixin,
    ModelsMixin,
    RegistryMixin,
    LinksMixin,
    dg.ConfigurableResource,
):
    """Where runs, models and the registry go; `enabled: false` turns tracking off."""

    enabled: bool = True
    tracking_uri: str  # resolved: sqlite:////abs/path/mlflow.db or http(s)://[user:pw@]host
    experiment: str
    registered_model: str
    ui_url: str | None = None  # where people open the UI; None: see `ui_base`
    # Where artifacts go for a database-backed store (`resources.mlflow_artifacts`): a
    # path or URI; None: next to a SQLite DB, else under `home`.
    artifact_root: str | None = None
    # The E2I home: the artifact root of a database other than SQLite, and what a SQLite
    # DB inside it moves with (a restored copy re-roots its own DB's artifact URIs).
    home: str | None = None

    # The Dagster run this resource was initialized for (None outside a run).
    _dagster_run_id: str | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._dagster_run_id = context.run.run_id if context.run else None

    @property
    def dagster_run_id(self) -> str | None:
        return self._dagster_run_id
