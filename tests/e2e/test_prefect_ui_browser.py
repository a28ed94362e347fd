"""The Prefect UI as the dashboard, in a real browser: a local `prefect server`, a small pipeline
run (`--to shard`, 16 samples) recorded in it, and the flow run page opened in headless Chromium.
The page must list the stage runs and the artifacts; the screenshots are kept under
runs/test-artifacts/ (prefect-flow-run.png: the stage runs; prefect-flow-run-artifacts.png;
prefect-stage-run-artifacts.png: the download stage's tables and progress)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from testkit.prefect_server import ROOT, mvlp, prefect_server

from mvlp_core import pipeline

pytestmark = pytest.mark.slow  # server start + a pipeline run + Chromium: ~2-4 min on 2 loaded cores
ARTIFACTS = ROOT / "runs" / "test-artifacts"
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
STAGES = pipeline.select(stop="shard")


@pytest.fixture
def browser():
    if not (CHROMEDRIVER and CHROMIUM):
        pytest.skip("chromium + chromium-driver not installed (apt-get install -y chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--window-size=1600,1200",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _latest_pipeline_run(env: dict[str, str]) -> tuple[dict, dict]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.deployment_runs import run_states

    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
        run, stages = run_states()
    assert run["state"] == "completed" and all(stages[s]["state"] == "completed" for s in STAGES)
    return run, stages


def _open_tab(driver, wait, tab_id: str) -> None:
    """Prefect's flow run page tabs are `<li class="p-tab" id="subflow-runs">` etc."""
    from selenium.webdriver.common.by import By

    tab = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, f"li.p-tab#{tab_id}"))
    driver.execute_script("arguments[0].click();", tab)


def test_flow_run_page_shows_stage_runs_and_artifacts(tmp_path: Path, browser) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with prefect_server(tmp_path / "prefect-home") as env:
        out = mvlp(
            env,
            "run",
            "demo",
            "--to",
            "shard",
            "--workdir",
            str(tmp_path / "run"),
            "--set",
            "dataset.samples=16",
            "--set",
            "shard.samples_per_shard=8",
        )
        assert out.returncode == 0, out.stdout + out.stderr
        run, stages = _latest_pipeline_run(env)
        run_id = run["flow_run_id"]
        ui = env["PREFECT_API_URL"].removesuffix("/api")
        browser.get(f"{ui}/runs/flow-run/{run_id}")
        wait = WebDriverWait(browser, 90, poll_frequency=0.5)
        wait.until(lambda d: "mvlp-data-pipeline" in d.find_element("tag name", "body").text)

        _open_tab(browser, wait, "subflow-runs")
        wait.until(lambda d: all(s in d.find_element("tag name", "body").text for s in STAGES))
        browser.save_screenshot(str(ARTIFACTS / "prefect-flow-run.png"))
        body = browser.find_element("tag name", "body").text
        assert all(stage in body for stage in STAGES), body[:2000]
        assert "Completed" in body

        _open_tab(browser, wait, "artifacts")
        wait.until(lambda d: "pipeline-summary" in d.find_element("tag name", "body").text)
        browser.save_screenshot(str(ARTIFACTS / "prefect-flow-run-artifacts.png"))

        # a stage run: its table artifacts (summary, rejects by reason, throughput) and progress
        browser.get(f"{ui}/runs/flow-run/{stages['download']['flow_run_id']}")
        _open_tab(browser, wait, "artifacts")
        wanted = ("download-summary", "download-rejects", "download-throughput", "download-progress")
        wait.until(lambda d: all(k in d.find_element("tag name", "body").text for k in wanted))
        browser.save_screenshot(str(ARTIFACTS / "prefect-stage-run-artifacts.png"))
    assert (ARTIFACTS / "prefect-flow-run.png").stat().st_size > 10_000
