"""The known Dagster warnings stay out of the processes make run and make dev start, even
where Dagster imports our code inside `warnings.catch_warnings()`."""

import os
import subprocess
import sys

from e2i_platform.lib.known_warnings import KNOWN, with_known_ignored

PROBE = """
import warnings
from e2i_platform.lib.known_warnings import ignore_known
with warnings.catch_warnings():  # as Dagster may import user code
    ignore_known()
shown = []
warnings.showwarning = lambda message, *rest, **kw: shown.append(str(message))
for message in {messages!r}:
    warnings.warn(message + " and will be removed", DeprecationWarning)
print(shown)
"""


def _shown(env: dict[str, str], messages: list[str]) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(messages=messages)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return eval(done.stdout)  # the probe prints a list of strings


def test_the_known_warnings_are_ignored_through_the_environment_only():
    plain = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    other = "Something else is deprecated"
    messages = [*KNOWN, other]
    # The import-time filters were dropped with the catch_warnings block: all are shown.
    assert len(_shown(plain, messages)) == len(messages)
    # Through PYTHONWARNINGS the known ones stay hidden, anything else is still shown.
    assert _shown(with_known_ignored(plain), messages) == [f"{other} and will be removed"]


def test_existing_pythonwarnings_entries_are_kept_once():
    env = with_known_ignored({"PYTHONWARNINGS": "error::ResourceWarning"})
    again = with_known_ignored(env)
    assert again["PYTHONWARNINGS"].split(",")[0] == "error::ResourceWarning"
    assert again == env
