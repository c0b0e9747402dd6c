"""What `optuna.create_study` is given: the study's name, derived from its identity
(a hash of the training set's data version, the search settings and the
search-space version), and its sampler and pruner, with the boosting rounds at which
the pruner decides.

Optuna is imported inside functions so this module stays cheap to import.
"""

from __future__ import annotations

from e2i_platform.training.hpo import SEARCH_SPACE_VERSION


def make_sampler(cfg, slot: int = 0):
    """TPE, seeded per trial slot: parallel slots reading the same history at the same
    moment would otherwise suggest the same parameters. Slot 0 (the only one of a
    single-worker search) keeps the configured seed."""
    import optuna

    return optuna.samplers.TPESampler(
        seed=cfg.sampler.seed + slot, n_startup_trials=cfg.sampler.n_startup_trials
    )


def make_pruner(cfg):
    import optuna

    return optuna.pruners.HyperbandPruner(
        min_resource=cfg.pruner.min_resource,
        max_resource=cfg.max_boost_rounds,
        reduction_factor=cfg.pruner.reduction_factor,
    )


def pruning_rounds(cfg) -> frozenset[int]:
    """The boosting rounds at which the pruner decides. Every Hyperband bracket promotes
    at min_resource * reduction_factor**k rounds, so reporting only there gives the
    decisions (and, since TPE ranks pruned trials by their last report, the search)
    that reporting every round gives, with a tenth of the storage writes: at the
    default size those writes were 60% of the search on SQLite."""
    rounds, step = set(), cfg.pruner.min_resource
    while step <= cfg.max_boost_rounds:
        rounds.add(step)
        step *= cfg.pruner.reduction_factor
    return frozenset(rounds)


def study_identity(dataset_version: str, cfg) -> str:
    from e2i_platform.training.fingerprints import fingerprint

    # How trials are stored, watched and spread over workers is not what was searched.
    search = cfg.model_dump(
        exclude={
            "storage",
            "parallel_workers",
            "warm_start",
            "study_prefix",
            "heartbeat_interval_s",
            "heartbeat_grace_s",
        }
    )
    return fingerprint(
        {"dataset": dataset_version, "search": search, "space": SEARCH_SPACE_VERSION}
    )


def study_name(storage, cfg, identity: str, force_new: bool) -> str:
    import optuna

    base = f"{cfg.study_prefix}-{identity[:12]}"
    if not force_new:
        return base
    existing = set(optuna.get_all_study_names(storage))
    n = 2
    while f"{base}.{n}" in existing:
        n += 1
    return f"{base}.{n}"
