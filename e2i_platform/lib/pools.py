"""Which steps write a shared store, and the Dagster pool that lets one write at a time.

One table for the whole code location: `lib.gates.gated_asset` gives each asset its
pool by name, and the rollback op takes its own from here, so every writer of a store
is listed in one place. A pool is a Dagster instance-wide limit on concurrent steps,
claimed by every executor (multiprocess, in-process: `make run`, `dg.materialize`,
`dagster asset materialize`) before the step starts; the limit itself is instance
configuration (config/dagster/*.yaml: `concurrency: pools: default_limit: 1`), so a
run that finds the pool busy waits and logs "Step blocked by limit for pool ...".

- online_store: the Feast online store and the file registry beside it. Both
  `feature_registry` (feast apply: creates the online tables, rewrites the registry)
  and `online_features` (writes values, records its window in the registry) rewrite
  the whole registry file, so two at once lose one's update.
- model_registry: the MLflow registered model, its `champion` alias and
  releases/CURRENT: training registers a version, promotion and rollback move the
  alias and CURRENT.
- optuna_study: the Optuna study of the training set, held by `hpo_study`'s first step
  (`prepare_study`: creation, warm start, the queued trials), not by its trial slots,
  which only claim queued trials (`training.study_budget`). Study names are built at run
  time (`<prefix>-<identity>`) but a pool is fixed when the definitions are, so this
  one pool serialises every study: stricter than one per study, and no slower in
  practice, since the identity derives from the one training set and two runs at the
  same time tune the same study (they would both run its remaining trials).
"""

from __future__ import annotations

ONLINE_STORE = "online_store"
MODEL_REGISTRY = "model_registry"
OPTUNA_STUDY = "optuna_study"

# Slots per pool on every instance the platform creates (the templates' default_limit).
LIMIT = 1

# Asset or op name -> its pool.
POOLS: dict[str, str] = {
    "feature_registry": ONLINE_STORE,
    "online_features": ONLINE_STORE,
    # hpo_study is a graph: its first step sets the study up (creates, warm starts, queues
    # the trials); its trial slots run queued trials in parallel and take no pool.
    "prepare_study": OPTUNA_STUDY,
    "trained_model": MODEL_REGISTRY,
    "champion_model": MODEL_REGISTRY,
    "rollback_champion": MODEL_REGISTRY,  # the champion_rollback job's op
}


def pool_for(name: str) -> str | None:
    """The pool of the asset or op called `name`; None when it writes no shared store."""
    return POOLS.get(name)
