"""`make feast ARGS="plan"`: the Feast CLI on feature_repo/ with the platform's settings.

Exports the variables feature_store*.yaml reads (E2I_HOME, E2I_FEAST_PROJECT and,
for Redis, E2I_FEAST_REDIS) from config/ and the environment, picks the YAML of
the configured online store, and runs `feast -c feature_repo -f <yaml> ARGS`.
"""

import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from e2i_platform.resources.feast import FeastResource
    from e2i_platform.settings import load_settings

    settings = load_settings()
    feast = FeastResource(
        home=str(settings.home),
        project=settings.platform.feature_store.project,
        online_store=settings.online_store,
        redis_url=os.environ.get("REDIS_URL"),
    )
    env = {**os.environ, **feast.variables()}
    binary = str(Path(sys.executable).parent / "feast")
    command = [binary, "-c", feast.repo_path, "-f", str(feast.yaml_file), *argv]
    os.execve(binary, command, env)
    return 0  # not reached: execve replaces this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
