"""Where an MLflow store is and how to reach it: the tracking URI without credentials,
the SQLite file, the experiment's artifact location (`resources.mlflow_artifacts`), the
client, and the experiment (created where its artifacts belong, or checked)."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import unquote, urlsplit

import dagster as dg

from e2i_platform.lib.urls import redact_uri
from e2i_platform.resources.mlflow_process import environment, forget_artifact_repositories
from e2i_platform.resources.mlflow_secrets import error_text

# ensure_reachable: fail in seconds, not after MLflow's default 7 retries with exponential
# backoff and a 120 s timeout per request.
PROBE_MAX_RETRIES = 1  # the first urllib3 retry has no backoff sleep
PROBE_TIMEOUT_SECONDS = 3

# (tracking URI, experiment, artifact root) whose experiment's artifact location was
# checked in this process (`StoreMixin._settle_artifact_location`).
_SETTLED: set[tuple[str, str, str | None]] = set()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///path` URI (`sqlite:////abs/path` is absolute)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = unquote(uri[len("sqlite:///") :].split("?", 1)[0])
    return Path(path) if path and path != ":memory:" else None


class StoreMixin:
    """Part of `MlflowResource` (its fields: tracking_uri, experiment, artifact_root, home,
    registered_model, enabled)."""

    @property
    def safe_uri(self) -> str:
        return redact_uri(self.tracking_uri)

    @property
    def db_path(self) -> Path | None:
        return sqlite_path(self.tracking_uri)

    @property
    def artifact_uri(self) -> str | None:
        """The experiment's artifact location: `artifact_root`, else `<db dir>/artifacts`
        for SQLite, else `<home>/mlflow/artifacts` for another database; None for a
        tracking server (it keeps its own)."""
        from e2i_platform.resources.mlflow_artifacts import artifact_root_uri

        if self.is_http:
            return None
        return artifact_root_uri(self.db_path, self.artifact_root, self.home)

    @property
    def artifact_dir(self) -> Path | None:
        """The artifact location as a local directory (None when it is remote or unset)."""
        from e2i_platform.resources.mlflow_artifacts import local_path

        return local_path(self.artifact_uri)

    @property
    def is_http(self) -> bool:
        return urlsplit(self.tracking_uri).scheme in ("http", "https")

    def describe(self) -> dict[str, str]:
        """Where tracking goes, without secrets (for metadata)."""
        if not self.enabled:
            return {"tracking": "off"}
        where = {
            "tracking": "on",
            "tracking_uri": self.safe_uri,
            "experiment": self.experiment,
            "registered_model": self.registered_model,
        }
        if self.artifact_dir:
            where["artifacts"] = str(self.artifact_dir)
        elif self.artifact_uri:
            where["artifacts"] = redact_uri(self.artifact_uri)
        elif self.is_http:
            where["artifacts"] = "through the tracking server"
        return where

    # --- connection ---

    def _client(self):
        from mlflow.tracking import MlflowClient

        db = self.db_path
        if db is not None:
            db.absolute().parent.mkdir(parents=True, exist_ok=True)
        client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        self._settle_artifact_location(client)
        return client

    def _settle_artifact_location(self, client) -> None:
        """Before this process reads or writes any artifact of the store, once: an existing
        experiment keeps its artifacts where this resource says (`_check_artifact_location`).
        Any call may be the first (logging to an existing run needs no experiment lookup)."""
        key = (self.tracking_uri, self.experiment, self.artifact_uri)
        if key in _SETTLED:
            return
        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is not None:  # else `_experiment_id` creates it where it belongs
            self._check_artifact_location(experiment.artifact_location)
            _SETTLED.add(key)

    def _experiment_id(self, client) -> str:
        """Get or create the experiment, its artifacts at `artifact_uri`
        (`_check_artifact_location` for an existing one)."""
        from mlflow.exceptions import MlflowException

        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is None:
            location = self.artifact_uri
            if location is None and not self.is_http:
                raise dg.Failure(
                    f"MLflow at {self.safe_uri}: no artifact root for experiment "
                    f"{self.experiment!r} (MLflow would write to ./mlruns of the working "
                    "directory): set mlflow.artifact_root (E2I_MLFLOW_ARTIFACT_ROOT)"
                )
            try:
                return client.create_experiment(self.experiment, artifact_location=location)
            except MlflowException as err:  # created concurrently by another process
                if err.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment = client.get_experiment_by_name(self.experiment)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage != "active":
            raise dg.Failure(
                f"MLflow experiment {self.experiment!r} ({self.safe_uri}) is deleted: restore "
                f"it (`mlflow experiments restore --experiment-id {experiment.experiment_id}`) "
                "or configure another experiment name"
            )
        self._check_artifact_location(experiment.artifact_location)
        return experiment.experiment_id

    def _check_artifact_location(self, recorded: str) -> None:
        """The experiment keeps its artifacts where this resource says, or it is this
        home's SQLite DB brought from another path (re-rooted here, once), or the run
        fails naming both places: it never writes to, or reads from, somewhere else. With
        a tracking server, anywhere but a path (`_check_served_artifacts`)."""
        from e2i_platform.resources.mlflow_artifacts import (
            moved_home_root,
            relocate_sqlite,
            same_location,
        )

        expected = self.artifact_uri
        if expected is None and self.is_http:
            self._check_served_artifacts(recorded)
            return
        if expected is None or same_location(recorded, expected):
            return
        if moved_home_root(recorded, expected, self.db_path, self.home):
            changed = relocate_sqlite(self.db_path, recorded, expected)
            forget_artifact_repositories()
            # On the step's stderr (its compute log): the DB was re-rooted, and how much.
            logging.getLogger(__name__).warning(
                "MLflow tracking DB %s came from another home: artifact locations moved "
                "from %s to %s (%s)",
                self.db_path,
                recorded,
                expected,
                ", ".join(f"{k}: {n}" for k, n in changed.items() if n) or "nothing left",
            )
            return
        raise dg.Failure(
            f"MLflow experiment {self.experiment!r} ({self.safe_uri}) keeps its artifacts at "
            f"{redact_uri(recorded)}, not at this home's artifact root "
            f"{redact_uri(expected)}; MLflow cannot move an experiment's artifact location. "
            "Set mlflow.artifact_root (E2I_MLFLOW_ARTIFACT_ROOT) to the recorded location "
            "to keep using it, or set mlflow.experiment to a new name (its artifacts go to "
            "the root above)."
        )

    def _check_served_artifacts(self, recorded: str) -> None:
        """With a tracking server, the experiment's artifacts are the server's
        (`mlflow-artifacts:/`, proxied by `mlflow server --serve-artifacts`) or in a remote
        store (s3://...): never a path, which each client would write on its own disk."""
        from e2i_platform.resources.mlflow_artifacts import local_path

        if local_path(recorded) is None:
            return
        raise dg.Failure(
            f"MLflow experiment {self.experiment!r} ({self.safe_uri}) keeps its artifacts at "
            f"{redact_uri(recorded)}, a path: every machine that logs a model would write it "
            "to its own disk, out of the tracking server's reach. Run the server with "
            "`--serve-artifacts --artifacts-destination <dir or s3://...>` and no local "
            "--default-artifact-root (new experiments then keep theirs at mlflow-artifacts:/), "
            "and set mlflow.experiment to a new name: MLflow cannot move an experiment's "
            "artifact location."
        )

    def ensure_reachable(self) -> str | None:
        """Connect, get or create the experiment and return its id; fail fast if unreachable."""
        if not self.enabled:
            return None
        fail_fast = {
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(PROBE_MAX_RETRIES),
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(PROBE_TIMEOUT_SECONDS),
        }
        try:
            with environment(fail_fast):
                return self._experiment_id(self._client())
        except dg.Failure:
            raise
        except Exception as err:
            raise dg.Failure(
                f"MLflow tracking at {self.safe_uri} is unreachable: {error_text(self.tracking_uri, err)}. "
                "Start the tracking server or set mlflow.enabled: false "
                "(E2I_MLFLOW_ENABLED=false) to train without tracking."
            ) from None
