"""Links to the MLflow UI for Dagster metadata, without credentials.

The MLflow UI routes (its React router, mlflow/server/js): #/experiments/<id>,
#/experiments/<id>/runs/<run id>, #/models/<name>/versions/<version>.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import dagster as dg

from e2i_platform.lib.urls import redact_uri
from e2i_platform.resources.mlflow_secrets import secret_free

# Where `mlflow ui` / `mlflow server` listen by default (mlflow.utils.cli_args HOST, PORT):
# the UI of a local store, unless `ui_url` says otherwise.
LOCAL_UI_URL = "http://127.0.0.1:5000"


class LinksMixin:
    """Part of `MlflowResource`: UI URLs of experiments, runs and model versions."""

    @property
    def ui_base(self) -> str:
        """The MLflow UI: `ui_url`, else the tracking server (it serves the UI), else the
        address `mlflow ui --backend-store-uri <tracking_uri>` listens on. No credentials."""
        if self.ui_url:
            return redact_uri(self.ui_url).rstrip("/")
        if self.is_http:
            return self.safe_uri.rstrip("/")
        return LOCAL_UI_URL

    def experiment_url(self, experiment_id: str | None) -> str | None:
        if not self.enabled or not experiment_id:
            return None
        return f"{self.ui_base}/#/experiments/{quote(str(experiment_id), safe='')}"

    @secret_free
    def run_url(self, run_id: str | None) -> str | None:
        """The run's page (its experiment looked up in the store), or None: tracking off,
        no run, or a run the store does not hold."""
        if not self.enabled or not run_id:
            return None
        from mlflow.exceptions import MlflowException

        try:
            experiment_id = self._client().get_run(run_id).info.experiment_id
        except MlflowException as err:
            if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        return f"{self.experiment_url(experiment_id)}/runs/{quote(run_id, safe='')}"

    def model_version_url(self, version: str | int | None) -> str | None:
        """The registered model version's page (no store call: name and version say it)."""
        if not self.enabled or version is None:
            return None
        name = quote(self.registered_model, safe="")
        return f"{self.ui_base}/#/models/{name}/versions/{quote(str(version), safe='')}"

    def ui_links(
        self, run_id: str | None = None, model_version: str | int | None = None
    ) -> dict[str, dg.MetadataValue]:
        """URL metadata: `mlflow_run_url` and `mlflow_model_version_url`, each when known."""
        urls = {
            "mlflow_run_url": self.run_url(run_id) if run_id else None,
            "mlflow_model_version_url": self.model_version_url(model_version),
        }
        return {key: dg.MetadataValue.url(url) for key, url in urls.items() if url}

    def model_links(self, tracking: Mapping[str, Any]) -> dict[str, dg.MetadataValue]:
        """`ui_links` of a trained model's `mlflow` record (its run and registered
        version); empty for a model trained with tracking off."""
        return self.ui_links(tracking.get("run_id"), tracking.get("model_version"))

    @secret_free
    def run_link(self, run_id: str | None) -> str:
        """For metadata: the UI URL for a server, else `runs:/<id> (experiment <id>)`."""
        if not self.enabled or not run_id:
            return ""
        experiment_id = self._client().get_run(run_id).info.experiment_id
        if self.is_http:
            return f"{self.safe_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
        return f"runs:/{run_id} (experiment {experiment_id})"
