"""MLflow experiment tracking and model registry as a resource.

Our own small resource (not dagster-mlflow, not Optuna's MLflow callback). Every call goes
through an explicit `MlflowClient(tracking_uri=..., registry_uri=...)`: the process-global
("fluent") tracking URI and active-run stack are never used, except inside `log_model`, where
MLflow's flavor API needs the global URI: it is set for that call only, under a lock, and
restored exactly (the module global and the MLFLOW_TRACKING_URI variable).

`enabled: false` makes every method a no-op that returns None (or an empty result) without
importing MLflow or creating any file. MLflow is imported lazily, inside the methods.

Artifacts go to one root per store, never to ./mlruns of the working directory; a SQLite
store inside a home that was copied elsewhere is re-rooted into the copy on first use
(`resources.mlflow_artifacts`).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import dagster as dg

from e2i_platform.lib.urls import redact_uri

# MLflow's log_batch limits (mlflow.utils.validation), repeated here so that this module
# does not import MLflow.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
MAX_TAG_VALUE_LENGTH = 8000

# ensure_reachable: fail in seconds, not after MLflow's default 7 retries with exponential
# backoff and a 120 s timeout per request.
PROBE_MAX_RETRIES = 1  # the first urllib3 retry has no backoff sleep
PROBE_TIMEOUT_SECONDS = 3

REGISTRATION_TIMEOUT_SECONDS = 300.0

# Where `mlflow ui` / `mlflow server` listen by default (mlflow.utils.cli_args HOST, PORT):
# the UI of a local store, unless `ui_url` says otherwise.
LOCAL_UI_URL = "http://127.0.0.1:5000"

INTERMEDIATE_METRIC = "valid_auc"
SKIPPED_METRICS_TAG = "skipped_non_finite_metrics"
TRIAL_STATE_TAG = "optuna.state"
TRIAL_NUMBER_TAG = "optuna.trial_number"
PARENT_RUN_TAG = "mlflow.parentRunId"

# Optuna TrialState name -> MLflow RunStatus name. A pruned trial did what it was asked
# (it was stopped by design, not by a fault): FINISHED, told apart by its `optuna.state`
# tag. KILLED made half of every search look broken in the MLflow UI.
TRIAL_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED"}

# Process-wide MLflow state (environment variables, the fluent tracking URI) is only ever
# changed under this lock, and always restored.
_GLOBAL_STATE_LOCK = threading.RLock()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///path` URI (`sqlite:////abs/path` is absolute)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = unquote(uri[len("sqlite:///") :].split("?", 1)[0])
    return Path(path) if path and path != ":memory:" else None


def trial_status(state: Any) -> str:
    """MLflow run status for an Optuna trial state (a TrialState or its name)."""
    name = str(getattr(state, "name", state)).upper().rpartition(".")[2]
    try:
        return TRIAL_STATUS[name]
    except KeyError:
        raise ValueError(
            f"trial state {state!r} is not finished (expected one of {sorted(TRIAL_STATUS)})"
        ) from None


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _batches(
    metrics: Sequence[Any], params: Sequence[Any], tags: Sequence[Any]
) -> Iterator[tuple[list, list, list]]:
    """Split into log_batch calls within MLflow's limits (params and tags first)."""
    metrics, params, tags = list(metrics), list(params), list(tags)
    while metrics or params or tags:
        p, params = params[:MAX_PARAMS_TAGS_PER_BATCH], params[MAX_PARAMS_TAGS_PER_BATCH:]
        t, tags = tags[:MAX_PARAMS_TAGS_PER_BATCH], tags[MAX_PARAMS_TAGS_PER_BATCH:]
        room = min(MAX_METRICS_PER_BATCH, MAX_ENTITIES_PER_BATCH - len(p) - len(t))
        m, metrics = metrics[:room], metrics[room:]
        yield m, p, t


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block, then restore them."""
    with _GLOBAL_STATE_LOCK:
        saved = {key: os.environ.get(key) for key in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@contextmanager
def _fluent_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's global tracking URI at `uri` for the block, then restore it exactly.

    `mlflow.set_tracking_uri` also writes (or, for None, deletes) MLFLOW_TRACKING_URI, so
    both the module global and the variable are saved and put back.
    """
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    with _GLOBAL_STATE_LOCK:
        saved_global = getattr(tracking_utils, "_tracking_uri", None)
        saved_env = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(saved_global)
            if saved_env is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = saved_env


def _secret_free(method: Callable) -> Callable:
    """Errors whose text (or chained errors' text) holds the URI's credentials become a
    dg.Failure with the credentials removed, raised `from None` so that the original
    messages are not printed; other errors pass through unchanged."""

    @functools.wraps(method)
    def wrapper(self: MlflowResource, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except dg.Failure:
            raise
        except Exception as err:
            if not self._leaks(err):
                raise
            raise dg.Failure(
                f"MLflow {method.__name__} at {self.safe_uri} failed: {self._error_text(err)}"
            ) from None

    return wrapper


# The experiment of a study's run, by (tracking URI, run id): a run never changes
# experiment, and looking it up for every trial cost one more round trip per trial.
_PARENT_EXPERIMENT: dict[tuple[str, str], str] = {}

# (tracking URI, experiment, artifact root) whose experiment's artifact location was
# checked in this process (`MlflowResource._settle_artifact_location`).
_SETTLED: set[tuple[str, str, str | None]] = set()


def _forget_artifact_repositories() -> None:
    """Drop MLflow's process-wide cache of artifact repositories: it is keyed by run or
    model id alone, so after a re-rooting a cached one still points at the old root."""
    from mlflow.tracking._tracking_service import utils

    getattr(utils, "_artifact_repos_cache", {}).clear()


class MlflowResource(dg.ConfigurableResource):
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

    # --- where -------------------------------------------------------------------------

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
        return where

    def _redact(self, text: str) -> str:
        """Remove the URI's credentials from a message (MLflow errors quote full URLs)."""
        parts = urlsplit(self.tracking_uri)
        userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
        if userinfo:
            text = text.replace(userinfo + "@", "")
            for secret in {parts.password, unquote(parts.password or "")}:
                if secret:
                    text = text.replace(secret, "***")
        return text

    def _leaks(self, err: BaseException) -> bool:
        seen: set[int] = set()
        current: BaseException | None = err
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            if self._redact(str(current)) != str(current):
                return True
            current = current.__cause__ or current.__context__
        return False

    def _error_text(self, err: BaseException) -> str:
        """`Class (cause class): message`, without credentials, at most ~500 characters."""
        cause = err.__cause__ or err.__context__
        kind = type(err).__name__
        if cause is not None:
            kind += f" ({type(cause).__name__})"
        detail = self._redact(str(err))
        if len(detail) > 500:
            detail = detail[:500] + "..."
        return f"{kind}: {detail}"

    # --- connection --------------------------------------------------------------------

    def _client(self):
        from mlflow.tracking import MlflowClient

        db = self.db_path
        if db is not None:
            db.absolute().parent.mkdir(parents=True, exist_ok=True)
        client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        if not self.is_http:
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
        fails naming both places: it never writes to, or reads from, somewhere else."""
        from e2i_platform.resources.mlflow_artifacts import (
            moved_home_root,
            relocate_sqlite,
            same_location,
        )

        expected = self.artifact_uri
        if expected is None or same_location(recorded, expected):
            return
        if moved_home_root(recorded, expected, self.db_path, self.home):
            changed = relocate_sqlite(self.db_path, recorded, expected)
            _forget_artifact_repositories()
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

    def ensure_reachable(self) -> str | None:
        """Connect, get or create the experiment and return its id; fail fast if unreachable."""
        if not self.enabled:
            return None
        fail_fast = {
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(PROBE_MAX_RETRIES),
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(PROBE_TIMEOUT_SECONDS),
        }
        try:
            with _environment(fail_fast):
                return self._experiment_id(self._client())
        except dg.Failure:
            raise
        except Exception as err:
            raise dg.Failure(
                f"MLflow tracking at {self.safe_uri} is unreachable: {self._error_text(err)}. "
                "Start the tracking server or set mlflow.enabled: false "
                "(E2I_MLFLOW_ENABLED=false) to train without tracking."
            ) from None

    # --- runs --------------------------------------------------------------------------

    @staticmethod
    def _terminate(client, run_id: str, status: str) -> None:
        # For a tracking server, set_terminated prints "View run ... at: <tracking URI>" to
        # stdout: with the URI's password in it, and one extra get_run request per call.
        with _environment({"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}):
            client.set_terminated(run_id, status)

    def _log_batch(
        self,
        client,
        run_id: str,
        metrics: Sequence[Any] = (),
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> None:
        from mlflow.entities import Param, RunTag

        param_list = [Param(str(k), str(v)) for k, v in (params or {}).items()]
        tag_list = [RunTag(str(k), str(v)) for k, v in (tags or {}).items()]
        for m, p, t in _batches(metrics, param_list, tag_list):
            client.log_batch(run_id, metrics=m, params=p, tags=t, synchronous=True)

    @staticmethod
    def _metrics(
        values: Mapping[str, Any] | Sequence[tuple[str, int, Any]],
        timestamp_ms: int,
        step: int = 0,
    ) -> tuple[list, list[str]]:
        """Metric entities for the finite values, and labels of the skipped ones."""
        from mlflow.entities import Metric

        items = (
            [(key, step, value) for key, value in values.items()]
            if isinstance(values, Mapping)
            else list(values)
        )
        metrics, skipped = [], []
        for key, at, value in items:
            number = _finite(value)
            if number is None:
                skipped.append(f"{key}@{at}")
            else:
                metrics.append(Metric(str(key), number, timestamp_ms, int(at)))
        return metrics, skipped

    @staticmethod
    def _skipped_tag(skipped: list[str]) -> dict[str, str]:
        if not skipped:
            return {}
        value = ",".join(skipped)
        if len(value) > MAX_TAG_VALUE_LENGTH:
            value = value[: MAX_TAG_VALUE_LENGTH - 3] + "..."
        return {SKIPPED_METRICS_TAG: value}

    @_secret_free
    def start_study_run(self, name: str, params: dict, tags: dict) -> str | None:
        """A parent run for an Optuna study (left RUNNING; end it with `end_run`)."""
        if not self.enabled:
            return None
        client = self._client()
        run = client.create_run(
            self._experiment_id(client), run_name=name, tags={k: str(v) for k, v in tags.items()}
        )
        self._log_batch(client, run.info.run_id, params=params)
        return run.info.run_id

    @_secret_free
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
        run = client.create_run(experiment_id, run_name=f"trial-{number}", tags=tags)
        run_id = run.info.run_id
        try:
            self._log_batch(client, run_id, metrics=history + final, params=params)
        except Exception:
            self._terminate(client, run_id, "FAILED")
            raise
        self._terminate(client, run_id, status)
        return run_id

    @_secret_free
    def end_run(self, run_id: str | None, status: str = "FINISHED") -> None:
        if not self.enabled or not run_id:
            return None
        self._terminate(self._client(), run_id, status)
        return None

    @_secret_free
    def log_metrics(self, run_id: str | None, metrics: dict, step: int = 0) -> None:
        """Finite metrics at `step`; NaN/inf ones are skipped and tagged."""
        if not self.enabled or not run_id:
            return None
        found, skipped = self._metrics(metrics, int(time.time() * 1000), step=step)
        client = self._client()
        self._log_batch(client, run_id, metrics=found, tags=self._skipped_tag(skipped))
        return None

    @_secret_free
    def log_params(self, run_id: str | None, params: dict) -> None:
        if not self.enabled or not run_id:
            return None
        self._log_batch(self._client(), run_id, params=params)
        return None

    @_secret_free
    def set_tags(self, run_id: str | None, tags: dict) -> None:
        if not self.enabled or not run_id:
            return None
        self._log_batch(self._client(), run_id, tags=tags)
        return None

    @_secret_free
    def log_dict(self, run_id: str | None, obj: Any, artifact_file: str) -> None:
        """A JSON (or .yaml/.yml) artifact of the run."""
        if not self.enabled or not run_id:
            return None
        self._client().log_dict(run_id, obj, artifact_file)
        return None

    # --- models and registry -----------------------------------------------------------

    @_secret_free
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
        with _fluent_tracking_uri(self.tracking_uri):
            info = mlflow.lightgbm.log_model(
                booster,
                name=name,
                signature=signature,
                pip_requirements=list(pip_requirements),
                model_id=logged.model_id,
                run_id=run_id,
            )
        return info.model_uri

    @_secret_free
    def register(self, model_uri: str | None, run_id: str | None) -> str | None:
        """A new version of the registered model (created if missing), once READY."""
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

    @_secret_free
    def alias_version(self, alias: str) -> str | None:
        """The version holding `alias`, or None (no such alias or registered model)."""
        if not self.enabled:
            return None
        from mlflow.exceptions import MlflowException

        try:
            version = self._client().get_model_version_by_alias(self.registered_model, alias)
        except MlflowException as err:
            # no registered model: RESOURCE_DOES_NOT_EXIST; no alias: INVALID_PARAMETER_VALUE
            if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise
        return str(version.version)

    @_secret_free
    def set_alias(self, alias: str, version: str | int | None) -> None:
        if not self.enabled or version is None:
            return None
        self._client().set_registered_model_alias(self.registered_model, alias, str(version))
        return None

    @_secret_free
    def delete_alias(self, alias: str) -> None:
        """Remove the alias; a missing alias or model is not an error."""
        if not self.enabled:
            return None
        from mlflow.exceptions import MlflowException

        try:
            self._client().delete_registered_model_alias(self.registered_model, alias)
        except MlflowException as err:
            if err.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise
        return None

    # --- links to the UI -----------------------------------------------------------------
    # The MLflow UI routes (its React router, mlflow/server/js): #/experiments/<id>,
    # #/experiments/<id>/runs/<run id>, #/models/<name>/versions/<version>.

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

    @_secret_free
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

    @_secret_free
    def run_link(self, run_id: str | None) -> str:
        """For metadata: the UI URL for a server, else `runs:/<id> (experiment <id>)`."""
        if not self.enabled or not run_id:
            return ""
        experiment_id = self._client().get_run(run_id).info.experiment_id
        if self.is_http:
            return f"{self.safe_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
        return f"runs:/{run_id} (experiment {experiment_id})"
