"""The web page in a real headless Chromium against a real service on loopback: pick a user,
see the history timeline and the recommendations, explain them, paste events, see an error."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from test_serving import make_served_run

from shopseq.serving.client import running_service
from shopseq.serving.state import ServiceConfig

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def test_web_page_click_through(tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (CI installs it: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    run, ws, _ = make_served_run(tmp_path / "data")
    with running_service(run, ws, ServiceConfig(read_only=True)) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.set_default_timeout(20_000)
            page.goto(url)
            page.wait_for_selector("body[data-ready='1']")
            assert "sasrec" in page.inner_text("#status")
            user = page.locator("#user-select option").nth(1).get_attribute("value")
            page.select_option("#user-select", user)
            page.fill("#k", "5")
            page.click("#recommend-btn")
            page.wait_for_selector("#recs tbody tr")
            shown = page.locator("#recs tbody tr").evaluate_all("rows => rows.map(r => r.dataset.item)")
            expected = httpx.post(f"{url}/recommend", json={"user_pseudonym": user, "k": 5}).json()
            assert shown == [i["item_id"] for i in expected["items"]]
            assert page.locator("#timeline .event").count() == expected["history_length"] > 0
            assert "›" in page.locator("#recs tbody tr").first.inner_text()  # category path from the items table

            page.click("#explain-btn")
            page.wait_for_selector("#explain .explained")
            assert page.locator("#explain .explained").count() == 3
            assert page.locator("#explain .explained").first.locator(".contribution").count() > 0
            assert "att " in page.inner_text("#explain")
            page.screenshot(path=str(tmp_path / "web-user.png"), full_page=True)

            # pasted events for a new user: an unknown item is reported, a bad event type is an error
            page.select_option("#user-select", "")
            page.fill("#events", "i000003 view\ni000010 cart\nno-such-item view")
            page.click("#recommend-btn")
            page.wait_for_function("document.querySelector('#recs-note').textContent.includes('no-such-item')")
            assert page.locator("#recs tbody tr").count() == 5
            page.fill("#events", "i000003 teleport")
            page.click("#recommend-btn")
            page.wait_for_function("document.querySelector('#error').textContent.length > 0")
            assert "unknown_event_type" in page.inner_text("#error")
            page.screenshot(path=str(tmp_path / "web-error.png"), full_page=True)
        finally:
            browser.close()
    for name in ("web-user.png", "web-error.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    shutil.rmtree(tmp_path / "data", ignore_errors=True)
