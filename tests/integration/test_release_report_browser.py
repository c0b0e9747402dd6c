"""The release report in a real browser: Debian's Chromium, headless, driven through its
own chromedriver (never a downloaded one; `services.ensure_chromium` installs both, and
`make test` calls it before this lane). The report of a promotion and of a rollback,
published with real evaluation curves, opens from file:// with nothing fetched; the gate
table, every figure and every section render, within 2 s of navigation start."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from release_report_data import OFF, model_evaluation, promote_evaluated
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from e2i_platform.lib.releases import report_path
from e2i_platform.promotion.release import rollback
from e2i_platform.promotion.release_report_sections import PROMOTION_GATES

from services import CHROMEDRIVER, CHROMIUM, ServicesUnavailable, ensure_chromium

BROWSER_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-extensions",
)
RENDER_BUDGET_MS = 2000
SECTIONS = {
    "gates": "Gate results",
    "curves": "ROC, precision-recall and calibration curves",
    "regions": "ROC-AUC per region",
    "comparison": "Comparison with the previous champion",
    "versions": "Data and feature versions",
    "model": "Model, MLflow run and code",
}
# Every figure, drawn: an <img> decoded with pixels, an <svg> laid out with marks in it.
FIGURES_JS = """
const imgs = [...document.images].map(i => ({
  kind: 'img', name: i.alt, ok: i.complete && i.naturalWidth > 0,
  width: i.naturalWidth, height: i.naturalHeight}));
const svgs = [...document.querySelectorAll('svg')].map(s => {
  const box = s.getBoundingClientRect();
  const marks = [...s.querySelectorAll('polyline, rect.bar')].filter(m => {
    const b = m.getBBox(); return b.width > 0 || b.height > 0; });
  return {kind: 'svg', name: s.dataset.figure, ok: box.width > 0 && box.height > 0,
          width: box.width, height: box.height, marks: marks.length};
});
return imgs.concat(svgs);
"""
TIMING_JS = """
const nav = performance.getEntriesByType('navigation')[0];
return nav ? {start: nav.startTime, loadEventEnd: nav.loadEventEnd,
              resources: performance.getEntriesByType('resource').map(r => r.name)} : null;
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    try:
        ensure_chromium()
    except ServicesUnavailable as exc:
        pytest.fail(f"the browser test needs Chromium: {exc}")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in BROWSER_ARGS:
        options.add_argument(arg)
    options.add_argument("--window-size=1280,1600")
    with pytest.MonkeyPatch.context() as mp:
        # The driver and browser are given: Selenium Manager has nothing to find, and
        # offline it could not download anything if it were asked.
        mp.setenv("SE_OFFLINE", "true")
        service = Service(executable_path=str(CHROMEDRIVER))
        driver = webdriver.Chrome(service=service, options=options)
        driver.set_page_load_timeout(30)
        try:
            yield driver
        finally:
            driver.quit()


def open_report(driver: webdriver.Chrome, path: Path) -> float:
    """Load the report from file:// and return its render time: navigation start to the
    end of the load event (Navigation Timing), in ms; nothing else may be fetched."""
    driver.get(path.as_uri())
    WebDriverWait(driver, 10).until(
        lambda d: (
            d.execute_script("return document.readyState") == "complete"
            and (d.execute_script(TIMING_JS) or {}).get("loadEventEnd", 0) > 0
        )
    )
    timing = driver.execute_script(TIMING_JS)
    assert timing["resources"] == [], "the report fetched something"
    return timing["loadEventEnd"] - timing["start"]


def check_figures(driver: webdriver.Chrome, expected: set[str]) -> None:
    figures = driver.execute_script(FIGURES_JS)
    assert {f["name"] for f in figures} == expected
    for figure in figures:
        assert figure["ok"], figure
        if figure["kind"] == "svg":
            assert figure["marks"] >= 1, figure


def check_gate_table(driver: webdriver.Chrome) -> None:
    rows = driver.find_elements(By.CSS_SELECTOR, "#gate-table tbody tr")
    gates = [r.find_element(By.CSS_SELECTOR, "td.gate").get_attribute("data-gate") for r in rows]
    assert gates == list(PROMOTION_GATES)
    for row in rows:
        observed = row.find_element(By.CSS_SELECTOR, "td.observed")
        limit = row.find_element(By.CSS_SELECTOR, "td.limit")
        assert observed.is_displayed() and observed.text.strip(), row.text
        assert limit.is_displayed() and limit.text.strip()[0] not in "n", row.text  # a limit
        assert row.find_element(By.CSS_SELECTOR, "td.result").text in ("PASS", "FAIL")


def check_sections(driver: webdriver.Chrome, sections: dict[str, str]) -> None:
    for anchor, title in sections.items():
        heading = driver.find_element(By.CSS_SELECTOR, f"section#{anchor} > h2")
        assert heading.is_displayed() and heading.text == title


def test_a_promotion_report_renders_its_gate_table_and_figures(browser, tmp_path):
    promote_evaluated(tmp_path, "m0", model_evaluation(5, 0.8, None))
    release = promote_evaluated(tmp_path, "m1", model_evaluation(5, 0.3, 1.2))
    render_ms = open_report(browser, report_path(tmp_path, release["release_id"]))
    print(f"\nrelease report render time (navigationStart -> loadEventEnd): {render_ms:.1f} ms")

    assert browser.title == f"Release {release['release_id']} (promotion)"
    check_gate_table(browser)
    check_figures(browser, {"roc", "precision_recall", "calibration", "region_auc"})
    check_sections(browser, SECTIONS)
    assert render_ms < RENDER_BUDGET_MS


def test_a_rollback_report_shows_what_was_restored_and_why(browser, tmp_path):
    first = promote_evaluated(tmp_path, "m0", model_evaluation(6, 0.8, None))
    second = promote_evaluated(tmp_path, "m1", model_evaluation(6, 0.3, 1.2))
    reason = "AUC dropped <0.70> in monitoring & drift"
    back = rollback(tmp_path, OFF, reason, run_id="dagster-run-7")
    render_ms = open_report(browser, report_path(tmp_path, back["release_id"]))
    print(f"\nrollback report render time: {render_ms:.1f} ms")

    restored = browser.find_element(By.CSS_SELECTOR, "#restored .restored-release")
    assert restored.text == first["release_id"]
    assert browser.find_element(By.CSS_SELECTOR, "#restored .reason").text == reason
    table = browser.find_element(By.ID, "restored-table").text
    assert second["release_id"] in table and "dagster-run-7" in table
    check_gate_table(browser)  # the restored release's gates
    check_figures(browser, {"roc", "precision_recall", "calibration", "region_auc"})
    check_sections(browser, {"restored": "What was restored, and why", **SECTIONS})
    assert render_ms < RENDER_BUDGET_MS
