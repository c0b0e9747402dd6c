"""Load config/*.yaml: `${VAR}` / `${VAR:-default}` substitution, env overrides, validation.

`E2I_ENV` (default `local`) selects `config/env/<env>.yaml`, whose top-level keys
are config file names (`platform:`, `quality:`, ...) holding overrides that are
deep-merged over the base file. Every error names the file and the key path.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from e2i_platform.settings.alert_models import AlertSettings
from e2i_platform.settings.models import (
    CONFIG_FILES,
    FeastMaterializationSettings,
    MlflowSettings,
    OptunaSettings,
    PlatformSettings,
    PromotionSettings,
    QualitySettings,
    TrainingSettings,
)

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
REPO_ROOT = Path(__file__).resolve().parents[2]


class ConfigError(ValueError):
    """A configuration file is missing, malformed or invalid; the message names file and key."""


def config_dir() -> Path:
    return Path(os.environ.get("E2I_CONFIG_DIR", REPO_ROOT / "config")).resolve()


def environment() -> str:
    return os.environ.get("E2I_ENV", "local") or "local"


def _substitute(node: Any, file: Path, path: tuple[str, ...]) -> Any:
    if isinstance(node, dict):
        return {k: _substitute(v, file, (*path, str(k))) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, file, (*path, str(i))) for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node

    def replace(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                raise ConfigError(
                    f"{file}: {'.'.join(path)}: environment variable {name} is not set "
                    f"(write ${{{name}:-default}} to give a default)"
                )
            return default
        return value

    whole = _VAR.fullmatch(node)
    replaced = _VAR.sub(replace, node)
    # A value that is exactly one variable becomes a YAML scalar, so `${N:-2}` is the
    # int 2 and `${X:-}` is null; anything else (dates included) stays text.
    if whole:
        if replaced == "":
            return None
        try:
            scalar = yaml.safe_load(replaced)
        except yaml.YAMLError:
            return replaced
        return scalar if isinstance(scalar, bool | int | float) else replaced
    return replaced


def _read_yaml(file: Path) -> dict[str, Any]:
    try:
        text = file.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{file}: file not found") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _has_path(data: Any, loc: tuple) -> bool:
    for part in loc:
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


def _validate(model: type[BaseModel], data: dict, file: Path, override: tuple[Path, dict] | None):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(str(p) for p in err["loc"])
            where = file
            if override is not None and loc and _has_path(override[1], loc):
                where = override[0]
            key = ".".join(loc) or "(top level)"
            lines.append(f"{where}: {key}: {err['msg']}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def load(name: str, directory: Path | None = None, env: str | None = None) -> BaseModel:
    """Load and validate config/<name>.yaml with the environment's overrides."""
    if name not in CONFIG_FILES:
        raise ConfigError(f"unknown config file {name!r}; known: {sorted(CONFIG_FILES)}")
    directory = directory or config_dir()
    env = env or environment()
    file = directory / f"{name}.yaml"
    data = _substitute(_read_yaml(file), file, ())

    env_file = directory / "env" / f"{env}.yaml"
    override = None
    if env_file.exists():
        env_data = _read_yaml(env_file)
        unknown = set(env_data) - set(CONFIG_FILES)
        if unknown:
            raise ConfigError(
                f"{env_file}: {sorted(unknown)[0]}: not a config file name "
                f"(expected one of {sorted(CONFIG_FILES)})"
            )
        if name in env_data:
            section = env_data[name] or {}
            if not isinstance(section, dict):
                raise ConfigError(f"{env_file}: {name}: expected a mapping of overrides")
            section = _substitute(section, env_file, (name,))
            override = (env_file, section)
            data = _merge(data, section)
    elif env != "local":
        raise ConfigError(f"{env_file}: E2I_ENV={env!r} but there is no such environment file")
    return _validate(CONFIG_FILES[name], data, file, override)


@dataclass(frozen=True)
class Settings:
    """Everything configuration decides, resolved once when definitions are built."""

    env: str
    config_dir: Path
    platform: PlatformSettings
    quality: QualitySettings
    feast: FeastMaterializationSettings
    training: TrainingSettings
    optuna: OptunaSettings
    mlflow: MlflowSettings
    promotion: PromotionSettings
    alerts: AlertSettings

    @property
    def home(self) -> Path:
        home = Path(self.platform.home).expanduser()
        return home if home.is_absolute() else (REPO_ROOT / home).resolve()

    def under_home(self, url: str) -> str:
        """A configured URL with `<home>` replaced by E2I_HOME."""
        return url.replace("<home>", str(self.home))

    @property
    def online_store(self) -> str:
        """sqlite or redis: `auto` picks Redis when REDIS_URL is set."""
        chosen = self.platform.feature_store.online_store
        if chosen == "auto":
            return "redis" if os.environ.get("REDIS_URL") else "sqlite"
        return chosen

    def machine_local_state(self) -> list[str]:
        """With steps on Celery workers (several machines), each store a step reads or
        writes that would be a file of that worker's own: what to set instead. Empty when
        every store is shared (or steps run on this machine only)."""
        if self.platform.executor.kind != "celery":
            return []
        problems = []
        if not self.platform.store.url:
            problems.append(
                "store.url is empty: values would stay on each worker's disk "
                "(set E2I_STORE_URL=s3://bucket/prefix)"
            )
        if self.under_home(self.optuna.storage).startswith("sqlite"):
            problems.append(
                "optuna.storage is SQLite: each worker would tune its own study "
                "(set OPTUNA_STORAGE_URL=postgresql+psycopg2://...)"
            )
        uri = os.environ.get("MLFLOW_TRACKING_URI") or self.mlflow.tracking_uri
        if self.mlflow.enabled and not uri.startswith(("http://", "https://")):
            problems.append(
                "the MLflow tracking URI is not a tracking server: model artifacts would "
                "stay on each worker's disk (set MLFLOW_TRACKING_URI=http://...)"
            )
        if self.platform.feature_store.registry != "sql":
            problems.append(
                "feature_store.registry is file: each worker would read its own registry "
                "(set E2I_FEAST_REGISTRY=sql and E2I_FEAST_REGISTRY_URL)"
            )
        if self.online_store != "redis":
            problems.append(
                "the online store is SQLite: each worker would fill its own "
                "(set REDIS_URL, E2I_ONLINE_STORE=redis)"
            )
        return problems

    def require_shared_state(self) -> None:
        """Refuse to build a distributed code location that would keep state on a
        worker's disk (ConfigError naming every store and what to set)."""
        if problems := self.machine_local_state():
            raise ConfigError(
                "platform.executor.kind is celery (E2I_EXECUTOR), but steps on several "
                "machines need stores they all share:\n  " + "\n  ".join(problems)
            )


def load_settings(directory: Path | None = None, env: str | None = None) -> Settings:
    directory = (directory or config_dir()).resolve()
    env = env or environment()
    return Settings(
        env=env,
        config_dir=directory,
        platform=load("platform", directory, env),  # type: ignore[arg-type]
        quality=load("quality", directory, env),  # type: ignore[arg-type]
        feast=load("feast_materialization", directory, env),  # type: ignore[arg-type]
        training=load("training", directory, env),  # type: ignore[arg-type]
        optuna=load("optuna_config", directory, env),  # type: ignore[arg-type]
        mlflow=load("mlflow", directory, env),  # type: ignore[arg-type]
        promotion=load("promotion", directory, env),  # type: ignore[arg-type]
        alerts=load("alerts", directory, env),  # type: ignore[arg-type]
    )
