"""The history page in a real browser (headless Debian Chromium): the whole SMART launch runs in
the browser against the loopback stub EHR, the chart renders, and a screenshot is kept under
tests/artifacts/ for people to look at."""

from __future__ import annotations

import pytest
import requests
from selenium.webdriver.common.by import By

from . import history_patients as patients
from .browser import chromium, save_screenshot
from .live_server import LiveServer
from .smart_ehr import CLIENT_ID, LAUNCH_ID, StubEhr


@pytest.mark.parametrize(
    "name,expected_points,expected_inr",
    [("warfarin-with-inr", 1, 4), ("deficient-then-corrected", 4, 0), ("no-results", 0, 0)],
)
def test_history_page_in_chromium(make_app, settings, name, expected_points, expected_inr):
    with StubEhr(patients.PATIENTS[name]()) as ehr, LiveServer() as live:
        app = make_app(
            settings.with_overrides(
                smart_client_id=CLIENT_ID,
                secret_key="browser-test-secret-" + "z" * 32,
                public_base_url=live.url,
                smart_allowed_issuers=(ehr.iss,),
            )
        )
        live.serve(app)
        launch = requests.Request(
            "GET", f"{live.url}/launch", params={"iss": ehr.iss, "launch": LAUNCH_ID}
        ).prepare().url
        with chromium() as driver:
            driver.get(launch)
            assert driver.current_url == f"{live.url}/history", driver.page_source[:500]
            assert driver.title == "Vitamin D history"
            chart = driver.find_element(By.CSS_SELECTOR, "svg.vitd-history")
            assert chart.size["width"] > 600 and chart.size["height"] > 300  # laid out
            assert len(driver.find_elements(By.CSS_SELECTOR, "g.level-point")) == expected_points
            assert len(driver.find_elements(By.CSS_SELECTOR, "g.inr-point")) == expected_inr
            shot = save_screenshot(driver, f"history-{name}")
        assert ehr.problems == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
