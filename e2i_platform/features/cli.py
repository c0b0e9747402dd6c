"""`make feast ARGS="plan"`: the Feast CLI on feature_repo/ with the platform's settings.

Writes the configured home's feature_store.yaml (project, registry and online store
from config/ and the environment; `FeastResource.cli_config`), exports E2I_HOME, for
Redis E2I_FEAST_REDIS and for the SQL registry E2I_FEAST_REGISTRY_URL (the file names
both as `${...}`: Feast substitutes them), and runs
`feast -c feature_repo -f <that yaml> ARGS`. On the default home with the file
registry the plain `feast -c feature_repo ...` works as well.
"""

import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from e2i_platform.resources.feast import FeastResource
    from e2i_platform.settings import load_settings

    feast = FeastResource.for_settings(load_settings())
    yaml_file, variables = feast.cli_config()
    env = {**os.environ, **variables}
    binary = str(Path(sys.executable).parent / "feast")
    command = [binary, "-c", feast.repo_path, "-f", str(yaml_file), *argv]
    os.execve(binary, command, env)
    return 0  # not reached: execve replaces this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
