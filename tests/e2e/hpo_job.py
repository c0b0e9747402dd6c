"""The code location's main job, for tests that run it with the multiprocess executor:
every step process rebuilds it from this file (`ReconstructableJob.for_file`) and the
environment the test set, which spawned processes inherit."""

from e2i_platform.definitions import build_definitions
from e2i_platform.settings import load_settings


def main_job():
    return build_definitions(load_settings()).resolve_job_def("e2i_main")
