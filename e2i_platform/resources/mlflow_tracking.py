"""Runs in MLflow: created through the explicit client with the Dagster run id as a tag,
logged in batches within MLflow's limits (NaN/inf metrics skipped and named in a tag),
ended with a status, and the training set as a run's input dataset."""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from e2i_platform.resources.mlflow_process import environment
from e2i_platform.resources.mlflow_secrets import secret_free

# MLflow's log_batch limits (mlflow.utils.validation), repeated here so that this module
# does not import MLflow.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
MAX_TAG_VALUE_LENGTH = 8000

SKIPPED_METRICS_TAG = "skipped_non_finite_metrics"
# On every run the resource creates inside a Dagster run (and on registry versions).
DAGSTER_RUN_TAG = "dagster.run_id"
# On a dataset input (and its source): our content hash of the frame (`frame_version`).
CONTENT_HASH_TAG = "e2i.content_hash"
# MLflow infers a dataset's schema value by value (about 7 s per 500k rows of three text
# columns): from the first rows only.
SCHEMA_SAMPLE_ROWS = 10_000


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


class TrackingMixin:
    """Part of `MlflowResource`: runs, their metrics, tags and inputs."""

    def _run_tags(self, tags: Mapping[str, Any]) -> dict[str, str]:
        """The tags of a new run: `tags`, and the Dagster run id when there is one."""
        out = {str(k): str(v) for k, v in tags.items()}
        if self.dagster_run_id:
            out[DAGSTER_RUN_TAG] = self.dagster_run_id
        return out

    def _create_run(self, client, experiment_id: str, name: str, tags: Mapping[str, Any]):
        return client.create_run(experiment_id, run_name=name, tags=self._run_tags(tags))

    @staticmethod
    def _terminate(client, run_id: str, status: str) -> None:
        # For a tracking server, set_terminated prints "View run ... at: <tracking URI>" to
        # stdout: with the URI's password in it, and one extra get_run request per call.
        with environment({"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}):
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

    @secret_free
    def start_run(
        self, name: str, params: Mapping[str, Any], tags: Mapping[str, Any]
    ) -> str | None:
        """A run in the experiment, with its params and tags (left RUNNING; end it with
        `end_run`)."""
        if not self.enabled:
            return None
        client = self._client()
        run = self._create_run(client, self._experiment_id(client), name, tags)
        self._log_batch(client, run.info.run_id, params=params)
        return run.info.run_id

    @secret_free
    def end_run(self, run_id: str | None, status: str = "FINISHED") -> None:
        if not self.enabled or not run_id:
            return None
        self._terminate(self._client(), run_id, status)
        return None

    @secret_free
    def log_metrics(self, run_id: str | None, metrics: dict, step: int = 0) -> None:
        """Finite metrics at `step`; NaN/inf ones are skipped and tagged."""
        if not self.enabled or not run_id:
            return None
        found, skipped = self._metrics(metrics, int(time.time() * 1000), step=step)
        client = self._client()
        self._log_batch(client, run_id, metrics=found, tags=self._skipped_tag(skipped))
        return None

    @secret_free
    def set_tags(self, run_id: str | None, tags: dict) -> None:
        if not self.enabled or not run_id:
            return None
        self._log_batch(self._client(), run_id, tags=tags)
        return None

    @secret_free
    def log_dict(self, run_id: str | None, obj: Any, artifact_file: str) -> None:
        """A JSON (or .yaml/.yml) artifact of the run."""
        if not self.enabled or not run_id:
            return None
        self._client().log_dict(run_id, obj, artifact_file)
        return None

    @secret_free
    def log_dataset(
        self,
        run_id: str | None,
        frame: Any,
        name: str,
        content_hash: str,
        context: str = "training",
        targets: str | None = None,
    ) -> None:
        """The DataFrame as an input dataset of the run (`mlflow.data`): its schema and
        size, digest = our content hash (also tagged `e2i.content_hash` on the input and
        its source). Only the description is logged, never the rows."""
        if not self.enabled or not run_id:
            return None
        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.data.pandas_dataset import from_pandas
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        # An explicit source: without one MLflow resolves the "code" context itself
        # (source file, git commit) from the process.
        source_tags = {CONTENT_HASH_TAG: content_hash}
        if self.dagster_run_id:
            source_tags[DAGSTER_RUN_TAG] = self.dagster_run_id
        with warnings.catch_warnings():
            # The schema is inferred as a model signature is, with a hint about integer
            # columns and missing values at serving time: not about a dataset's record.
            warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer")
            described = from_pandas(
                frame.head(SCHEMA_SAMPLE_ROWS),
                source=CodeDatasetSource(tags=source_tags),
                targets=targets,
                name=name,
                digest=content_hash,
            ).to_dict()
        # The size is the whole frame's.
        profile = {"num_rows": int(len(frame)), "num_elements": int(frame.size)}
        dataset = Dataset(
            name=described["name"],
            digest=described["digest"],
            source_type=described["source_type"],
            source=described["source"],
            schema=described.get("schema"),
            profile=json.dumps(profile),
        )
        tags = [InputTag(MLFLOW_DATASET_CONTEXT, context), InputTag(CONTENT_HASH_TAG, content_hash)]
        self._client().log_inputs(run_id, datasets=[DatasetInput(dataset, tags)])
        return None
