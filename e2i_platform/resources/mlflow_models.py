"""Models in MLflow: a LightGBM booster logged under its run (flavor API, signature,
pinned requirements) and registered as a new version of the registered model, with
tags. Which version is which (aliases, roles) is `resources.mlflow_registry`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import dagster as dg

from e2i_platform.resources.mlflow_process import fluent_tracking_uri
from e2i_platform.resources.mlflow_secrets import secret_free

REGISTRATION_TIMEOUT_SECONDS = 300.0


class ModelsMixin:
    """Part of `MlflowResource`: log and register models."""

    @secret_free
    def log_model(
        self,
        run_id: str | None,
        booster: Any,
        input_example: Any,
        pip_requirements: list[str],
        name: str = "model",
    ) -> str | None:
        """Log a LightGBM Booster under the run; returns its `models:/<model_id>` URI.

        The signature is inferred from `input_example` (a small DataFrame) and the booster's
        predictions; explicit pip requirements skip MLflow's slow requirement inference. The
        example itself is not stored: MLflow's serving check round-trips it through JSON,
        which drops the pandas categories the booster was trained with, so the check
        fails and only logs a warning. The signature records the columns and types.
        The logged model is created with our client in the run's experiment and the flavor
        call gets `run_id` and `model_id`, so no fluent run is started or ended: the run's
        status is untouched.
        """
        if not self.enabled or not run_id:
            return None
        import mlflow.lightgbm
        from mlflow.models import infer_signature

        client = self._client()
        run = client.get_run(run_id)
        signature = infer_signature(input_example, booster.predict(input_example))
        logged = client.create_logged_model(
            experiment_id=run.info.experiment_id,
            name=name,
            source_run_id=run_id,
            params=dict(run.data.params),
        )
        with fluent_tracking_uri(self.tracking_uri):
            info = mlflow.lightgbm.log_model(
                booster,
                name=name,
                signature=signature,
                pip_requirements=list(pip_requirements),
                model_id=logged.model_id,
                run_id=run_id,
            )
        return info.model_uri

    @secret_free
    def register(
        self, model_uri: str | None, run_id: str | None, tags: Mapping[str, Any] | None = None
    ) -> str | None:
        """A new version of the registered model (created if missing), once READY, with
        `tags` and the Dagster run id."""
        if not self.enabled or not model_uri:
            return None
        from mlflow.exceptions import MlflowException

        client = self._client()
        try:
            client.create_registered_model(self.registered_model)
        except MlflowException as err:
            if err.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        source, model_id = model_uri, None
        if model_uri.startswith("models:/"):
            ref = model_uri[len("models:/") :]
            if ref and "/" not in ref and "@" not in ref:  # models:/<model_id> from log_model
                # A local registry store resolves `models:/<id>` with a default MlflowClient
                # (the global tracking URI): resolve it here with ours instead.
                logged = client.get_logged_model(ref)
                source, model_id = logged.artifact_location, ref
                run_id = run_id or logged.source_run_id
        version = client.create_model_version(
            self.registered_model,
            source=source,
            run_id=run_id,
            tags=self._run_tags(tags or {}),
            await_creation_for=0,
            model_id=model_id,
        )
        deadline = time.monotonic() + REGISTRATION_TIMEOUT_SECONDS
        while version.status != "READY":
            if version.status == "FAILED_REGISTRATION":
                raise dg.Failure(
                    f"registering {model_uri} as {self.registered_model} failed: "
                    f"{version.status_message}"
                )
            if time.monotonic() > deadline:
                raise dg.Failure(
                    f"model version {self.registered_model}/{version.version} not READY after "
                    f"{REGISTRATION_TIMEOUT_SECONDS:.0f} s (status {version.status})"
                )
            time.sleep(0.5)
            version = client.get_model_version(self.registered_model, version.version)
        return str(version.version)
