"""A step's peak memory is its own: reset when the step starts, not the process's
lifetime peak, and what earlier steps freed is not counted against it."""

import numpy as np

from e2i_platform.lib import step_cost


def _step(run: str, mib: int) -> dict:
    step_cost.start(run, "step")
    block = np.ones(mib * 2**20 // 8)  # touched: resident
    block.sum()
    del block
    cost = step_cost.finish(run, "step")
    return {k: v.value for k, v in cost.items()}


def test_each_step_reports_its_own_peak_and_duration():
    big = _step("run-a", 400)
    small = _step("run-b", 20)
    assert "step_peak_rss_scope" not in big  # Linux: the peak is reset per step
    assert big["step_seconds"] > 0 and small["step_seconds"] > 0
    # The second step did not inherit the first one's 400 MiB peak.
    assert big["step_peak_rss_mib"] - small["step_peak_rss_mib"] > 300
