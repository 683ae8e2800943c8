"""The dashboard in a real headless Chromium (Debian's, driven by Selenium through Debian's
chromedriver): login, a deployed app and its replica, the view following requests, and no data
without an admin token. Screenshots are saved in the test's tmp dir."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import wait_until
from tests.integration.helpers import cli_json, load

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="needs Debian's chromium and chromium-driver (scripts/system-packages installs them)",
)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1100"]  # fmt: skip


@pytest.fixture
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_dashboard_login_app_replica_and_updates(server, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    hello = load("hello")
    hello.app.deploy()
    counter = hello.Counter()
    assert counter.increment.remote() == 1  # a replica, kept for scaledown_window=30
    key = cli_json("key", "create", "--app", "hello", env=server.env())["token"]

    # No data without a token: the API refuses none, an endpoint key, and a forged cookie.
    overview = f"{server.url}/dashboard/api/overview"
    assert httpx.get(overview).status_code == 401
    assert httpx.get(overview, headers={"Authorization": f"Bearer {key}"}).status_code == 401
    assert httpx.get(overview, cookies={"ember_dashboard": "forged"}).status_code == 401

    browser.get(f"{server.url}/dashboard")
    visible = lambda element_id: browser.find_element(By.ID, element_id).is_displayed()  # noqa: E731
    wait_until(lambda: visible("login"))
    assert not visible("main")
    assert "hello" not in browser.find_element(By.TAG_NAME, "body").text
    browser.save_screenshot(str(tmp_path / "1-login.png"))

    _log_in(browser, key)  # an endpoint key is not enough
    wait_until(lambda: browser.find_element(By.ID, "login-error").text)
    assert not visible("main")

    _log_in(browser, server.token)
    wait_until(lambda: visible("main"))
    cookie = browser.get_cookie("ember_dashboard")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    row = '#functions tr[data-app="hello"][data-function="Counter"]'
    wait_until(lambda: _text(browser, row + ' .replica[data-state="ready"]'))
    browser.save_screenshot(str(tmp_path / "2-app-and-replica.png"))

    requests = lambda: int(_text(browser, row + " .requests") or 0)  # noqa: E731
    before = requests()
    assert before >= 1
    assert counter.increment.remote() == 2
    wait_until(lambda: requests() > before, timeout=15)
    browser.save_screenshot(str(tmp_path / "3-after-a-request.png"))
    assert all((tmp_path / name).stat().st_size > 0 for name in
               ("1-login.png", "2-app-and-replica.png", "3-after-a-request.png"))  # fmt: skip

    browser.find_element(By.ID, "logout").click()
    wait_until(lambda: visible("login"))
    assert httpx.get(overview, cookies={"ember_dashboard": cookie["value"]}).status_code == 401


def _text(browser, selector: str) -> str | None:  # type: ignore[no-untyped-def]
    """The element's text now (the page redraws every two seconds: no element is kept)."""
    script = "const e = document.querySelector(arguments[0]); return e && e.textContent;"
    text: str | None = browser.execute_script(script, selector)
    return text


def _log_in(browser, token: str) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    field = browser.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
