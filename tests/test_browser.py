"""The status page in a real browser: Playwright driving the system's Chromium (never a browser
Playwright downloads) against a real `reconciler run` daemon and a real webhook target.

Skipped, with the reason, when Chromium or Playwright is missing, except in CI (CI=true), where
they must be there (`.ci/run` installs chromium). Screenshots of the list and of one integration
are written to the test's temporary directory; with UPDATE_SCREENSHOTS=1 they are copied to
docs/ as well (the README shows them).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.conftest import ROOT
from tests.peers import Peer, Reply
from tests.pipeline import webhook_to
from tests.test_daemon import SECRET, Daemon

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WAIT_MS = 30_000  # generous for a loaded CI machine
USER = {"userId": 7, "email": "ada@example.edu", "name": "Ada"}
REPORTS = """\
apiVersion: cms.integrations/v1
kind: Integration
id: reports
name: Reporting export
type: file
labels: {team: data}
config: {url: "file://state/exports"}
webhooks: [{events: ["grade.*"]}]
"""
BROKEN = """\
apiVersion: cms.integrations/v1
kind: Integration
id: broken
name: Broken
type: webhook
config: {endpoint: "http://127.0.0.1:9/x", allowPrivateNetwork: true}
webhooks: [{events: nope}]
"""


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: in CI the browser tests must run (.ci/run installs chromium)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Chromium, headless, launched by Playwright from the system's executable."""
    if CHROMIUM is None:
        _unavailable("chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def site(tmp_path: Path, peer: Peer) -> Iterator[Daemon]:
    """A daemon with the webhook `hook` (to the peer, one attempt: a failure is a dead letter)
    and a file integration, its API on a port the kernel picked."""
    config = tmp_path / "integrations.d"
    config.mkdir()
    (config / "hook.yaml").write_text(
        webhook_to(peer.url, retry="retry: {schedule: [1s], maxAttempts: 1}").replace(
            "type: webhook", "type: webhook\nlabels: {team: ops}"
        )
    )
    (config / "reports.yaml").write_text(REPORTS)
    with Daemon(tmp_path, env={"ADMIN_SECRET": SECRET}) as daemon:
        yield daemon


def admin(daemon: Daemon) -> httpx.Client:
    return httpx.Client(base_url=daemon.url, headers={"x-admin-secret": SECRET}, timeout=10)


def until(check: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # polling, with the deadline above


def sign_in(page: Any, url: str, secret: str = SECRET) -> None:
    page.goto(url + "/sign-in")
    page.fill("#secret", secret)
    page.click("button[type=submit]")


def screenshot(page: Any, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(path, ROOT / "docs" / name)


def test_an_admin_signs_in_watches_acts_and_signs_out(chromium, site, peer, tmp_path):
    context = chromium.new_context(viewport={"width": 1280, "height": 900}, timezone_id="Asia/Tokyo", locale="en-US")
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    console_errors: list[str] = []
    page.on("console", lambda message: message.type == "error" and console_errors.append(message.text))
    with admin(site) as api:
        # a wrong secret is refused, the right one signs in
        sign_in(page, site.url, "not-the-admin-secret-at-all")
        assert page.locator("#sign-in-error").inner_text() == "That is not the admin secret."
        sign_in(page, site.url)
        page.wait_for_selector("#row-hook")
        assert page.locator("#row-reports").count() == 1
        cookie = next(c for c in context.cookies() if c["name"] == "reconciler_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and SECRET not in cookie["value"]
        assert page.evaluate("document.cookie") == ""  # out of the script's reach

        # times in the viewer's zone, the RFC 3339 value on hover
        stamp = page.locator("time[datetime]").first
        assert "GMT+9" in stamp.inner_text() and re.fullmatch(r"\d{4}-\d\d-\d\dT.*Z", stamp.get_attribute("title"))

        # a file broken by a commit: its file:line:col on the page
        site.wait_watching(api, site.workdir / "integrations.d")
        (site.workdir / "integrations.d" / "broken.yaml").write_text(BROKEN)

        def refused_shown() -> bool:
            page.reload()
            return bool(re.search(r"broken\.yaml:\d+:\d+: ", page.locator("main").inner_text()))

        until(refused_shown, "the refused file on the page")

        # the live log: an event triggered now appears without reloading
        page.goto(site.url + "/integrations/hook")
        page.wait_for_selector("#live:not([hidden])")
        peer.script = lambda _seen: Reply(500, "no")
        triggered = api.post("/api/integrations/webhooks/trigger", json={"event": "user.registered", "data": USER})
        assert triggered.status_code == 202
        page.wait_for_selector("#log li.new.k-attempt:has-text('user.registered')")
        until(lambda: api.get("/api/integrations/hook").json()["deliveries"].get("dead") == 1, "a dead letter")

        # replay the dead delivery from the page
        peer.script = lambda _seen: Reply()
        page.goto(site.url + "/integrations/hook?deliveries=dead")
        page.click("button.replay-one")
        assert "1 delivery queued again" in page.locator("#flash").inner_text()
        until(lambda: api.get("/api/integrations/hook").json()["deliveries"].get("delivered") == 1, "the replay")
        page.wait_for_selector("#log li.k-attempt:has-text('delivered')")  # rendered, or live if it came later

        page.goto(site.url + "/integrations/hook?deliveries=delivered&hours=1")
        assert page.locator("#deliveries tr[data-status=delivered] .attempts li").count() == 2  # dead, then replayed
        # the plot's minutes on the viewer's clock too (the server draws them in UTC)
        label = page.locator("svg.plot text.clock").first
        at = datetime.fromisoformat(label.get_attribute("data-at").replace("Z", "+00:00"))
        assert label.text_content() == at.astimezone(ZoneInfo("Asia/Tokyo")).strftime("%H:%M")
        screenshot(page, tmp_path, "status-integration.png")
        page.goto(site.url + "/")
        screenshot(page, tmp_path, "status-list.png")

        # suspend from the page: the status changes, with who and why
        page.goto(site.url + "/integrations/hook")
        page.fill("#suspend-reason", "partner maintenance")
        page.click("#action-suspend")
        assert page.locator("h1 .status").inner_text() == "suspended"
        assert "partner maintenance" in page.locator("#drift").inner_text()
        assert api.get("/api/integrations/hook").json()["status"] == "suspended"

        # a form without its CSRF token is refused, and nothing changes
        page.evaluate("document.querySelector('form[action$=\"/resume\"] input[name=csrf]').remove()")
        page.fill("#resume-reason", "forged")
        page.click("#action-resume")
        assert "not sent from this page" in page.locator("#refused").inner_text()
        assert api.get("/api/integrations/hook").json()["status"] == "suspended"

        # sign out: the page asks for the secret again
        page.goto(site.url + "/")
        page.click("#sign-out")
        page.wait_for_selector("#secret")
        page.goto(site.url + "/")
        assert page.locator("#secret").count() == 1 and page.locator("#row-hook").count() == 0
    assert not [e for e in console_errors if "Content Security Policy" in e], console_errors
    context.close()


def test_the_page_reads_without_javascript_at_a_phones_width(chromium, site):
    context = chromium.new_context(java_script_enabled=False, viewport={"width": 390, "height": 844})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    sign_in(page, site.url)
    page.wait_for_selector("#row-hook")
    text = page.locator("#integrations").inner_text()
    assert "hook" in text and "reports" in text and "UTC" in page.locator("main").inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    page.select_option("select[name=label]", "team=data")
    page.click(".filters button[type=submit]")
    assert page.locator("#row-reports").count() == 1 and page.locator("#row-hook").count() == 0
    page.goto(site.url + "/integrations/hook")
    assert page.locator("#conditions").count() == 1 and page.locator("#spec").count() == 1
    context.close()


def test_the_page_is_keyboard_navigable_and_dark_when_the_system_is(chromium, site):
    context = chromium.new_context(color_scheme="dark")
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    sign_in(page, site.url)
    page.wait_for_selector("#row-hook")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(18, 20, 23)", background  # the dark palette's background
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    # tab on to the first integration's link and follow it with Enter
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.getAttribute('href')") == "/integrations/hook":
            break
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/integrations/hook$"))
    context.close()


def test_the_api_reference_sends_requests_from_the_browser(chromium, site, peer):
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    console_errors: list[str] = []
    page.on("console", lambda message: message.type == "error" and console_errors.append(message.text))

    def send(anchor: str) -> tuple[str, str]:
        operation = page.locator(f"#{anchor}")
        operation.locator("button.send").click()
        status = operation.locator(".answer-status")
        page.wait_for_function(
            "element => element.classList.contains('ok') || element.classList.contains('bad')",
            arg=status.element_handle(),
        )
        return status.inner_text(), operation.locator(".answer-body").inner_text()

    # a link to an operation opens it; without the secret the API refuses, with it the API answers
    page.goto(site.url + "/api/docs#op-get-api-integrations")
    assert page.locator("details#op-get-api-integrations[open]").count() == 1
    status, body = send("op-get-api-integrations")
    assert "→ 401" in status, status
    page.fill("#api-secret", SECRET)
    status, body = send("op-get-api-integrations")
    assert "→ 200" in status and '"id": "hook"' in body, (status, body)

    # the trigger's example body is a valid event: sent as it is, it reaches the webhook target
    page.goto(site.url + "/api/docs#op-post-api-integrations-webhooks-trigger")
    page.fill("#api-secret", SECRET)  # a new page: the secret was never kept
    status, body = send("op-post-api-integrations-webhooks-trigger")
    assert "→ 202" in status and '"event": "user.registered"' in body, (status, body)
    until(lambda: any(s.json().get("event") == "user.registered" for s in peer.requests()), "the delivery")

    # a followed log streams into the answer until Stop
    logs = page.locator("#op-get-api-integrations-id-logs")
    logs.locator("summary").click()
    logs.locator("input[name=id]").fill("hook")
    logs.locator("input[name=follow]").fill("true")
    logs.locator("button.send").click()
    shown = logs.locator(".answer-body").element_handle()
    page.wait_for_function("element => element.textContent.includes('following the log of hook')", arg=shown)
    with admin(site) as api:
        assert api.post("/api/integrations/webhooks/trigger", json={"event": "user.login", "data": USER}).is_success
    page.wait_for_function("element => element.textContent.includes('user.login')", arg=shown)
    logs.locator("button.stop").click()
    page.wait_for_selector("#op-get-api-integrations-id-logs button.stop[hidden]", state="attached")
    assert SECRET not in page.content()
    assert not [e for e in console_errors if "Content Security Policy" in e], console_errors
    context.close()
