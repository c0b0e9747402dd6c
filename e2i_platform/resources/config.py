"""Configuration as a resource, so checks read the same validated YAML the definitions did."""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg

from e2i_platform.settings import Settings, load_settings

# Queues whose missing reference this process has already warned about.
_WARNED: set[str] = set()


class ConfigResource(dg.ConfigurableResource):
    """The config/ directory and environment the code location was built with."""

    config_dir: str
    env: str

    def settings(self) -> Settings:
        return load_settings(Path(self.config_dir), self.env)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """With the Celery executor, fail the step before it reads or writes anything
        when this machine's deployment differs from the reference the launching side
        recorded in the instance (lib.deployment); every IO manager and check requires
        this resource, so every step passes here. Multiprocess: nothing to compare (a
        local run under edited config is what the user asked for)."""
        if context.run is None:
            # A sensor or schedule evaluation (the freshness sensor requires this resource):
            # it runs on the orchestration machine, and a refused tick would silence paging.
            return
        settings = self.settings()
        if settings.platform.executor.kind != "celery":
            return
        from e2i_platform.lib.deployment import (
            deployment_fingerprint,
            mismatch_message,
            read_reference,
        )

        queue = settings.platform.executor.celery_queue
        reference = read_reference(context.instance, queue) if context.instance else None
        if reference is None:
            if queue not in _WARNED:
                _WARNED.add(queue)
                (context.log or logging.getLogger(__name__)).warning(
                    f"no deployment reference for Celery queue {queue!r} in the instance: "
                    "this worker's configuration could not be compared with the launcher's "
                    "(make run or make dev records it)"
                )
            return
        if differing := reference.differing(deployment_fingerprint(settings)):
            raise dg.Failure(
                description=mismatch_message(differing, reference, "The worker running this step")
            )
