"""The status page in a real browser: Debian's chromium, driven by Selenium through the system chromedriver
(`/usr/bin/chromedriver`; nothing is downloaded). Pages load without console errors, the timeline is the
API's, a silence made in the page mutes the next matching alert, the forms are reached with the keyboard,
every input has its label, focus is visible, text has a contrast of at least 4.5:1, and a screenshot of
each page is kept in tests/artifacts/ui/ (BRIDGE_UI_ARTIFACTS elsewhere; gitignored).

Selenium is synchronous and the bridge runs on this test's event loop, so each browser step runs in a
thread (`asyncio.to_thread`)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.admin.ui.conftest import SCREENSHOTS, VIEWER
from tests.amp import alert, group
from tests.conftest import Snow, eventually, mapping, post
from tests.running import ROOT, TOKEN, base_url, call, webhook_url

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("BRIDGE_UI_ARTIFACTS") or ROOT / "tests" / "artifacts" / "ui")
PAGES = {
    "incidents": "/ui/incidents", "noise": "/ui/noise", "silences": "/ui/silences",
    "dead-letters": "/ui/dead-letters", "heartbeats": "/ui/heartbeats", "health": "/ui/health",
}  # fmt: skip

# Every element with text of its own: its colour against the first opaque background behind it.
CONTRAST_JS = """
function rgb(s) { const m = s.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
  const p = m[1].split(',').map(x => parseFloat(x)); return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1}; }
function lum(c) { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b); }
function bg(el) { for (let e = el; e; e = e.parentElement) { const c = rgb(getComputedStyle(e).backgroundColor);
  if (c && c.a > 0) return c; } return {r: 255, g: 255, b: 255, a: 1}; }
const out = [];
for (const el of document.body.querySelectorAll('*')) {
  if (el.closest('svg') || el.closest('.sr-only') || el.closest('.skip')) continue;
  const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
  if (!own || !el.getClientRects().length) continue;
  const fg = rgb(getComputedStyle(el).color), b = bg(el);
  const l1 = lum(fg), l2 = lum(b), ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
  out.push([el.tagName + (el.className ? '.' + el.className : ''), el.textContent.trim().slice(0, 40), ratio]);
}
return out;
"""
UNLABELLED_JS = """
return [...document.querySelectorAll('input, select, textarea, button')]
  .filter(e => e.type !== 'hidden')
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
  .filter(e => !(e.tagName === 'BUTTON' && e.textContent.trim()))
  .map(e => e.outerHTML.slice(0, 120));
"""
FOCUSED_JS = """
const e = document.activeElement, s = getComputedStyle(e);
return [e.tagName, e.id || e.getAttribute('name') || e.textContent.trim().slice(0, 30), s.outlineStyle, s.outlineWidth];
"""


def system_binary(path: str) -> str:
    """Debian's binary at `path`; skip without it, except under CI=1 where it is a failure."""
    if os.path.exists(path):
        return path
    if os.environ.get("CI"):
        pytest.fail(f"{path} is missing (.ci/run installs chromium and chromium-driver)")
    pytest.skip(f"{path} is missing")


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = system_binary(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--no-first-run", "--disable-extensions"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(system_binary(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    SCREENSHOTS.append(str(ARTIFACTS))  # the session's summary names the folder
    try:
        yield driver
    finally:
        driver.quit()


def log_in(driver: Any, url: str, token: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url + "/ui/incidents")
    assert "/ui/login" in driver.current_url
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form.stack button[type=submit]").click()
    wait(driver).until(lambda d: d.current_url.endswith("/ui/incidents"))


def wait(driver: Any) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, 15)


def errors_in_console(driver: Any) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]


def visit_every_page(driver: Any, url: str, incident: str) -> dict[str, Any]:
    """Each page: loaded, no console error, a screenshot; then the timeline and the accessibility checks."""
    from selenium.webdriver.common.by import By

    seen: dict[str, Any] = {"errors": {}, "contrast": [], "unlabelled": {}}
    for name, path in {**PAGES, "incident": f"/ui/incidents/{incident}", "login": "/ui/login"}.items():
        if name == "login":
            driver.delete_all_cookies()
        driver.get(url + path)
        assert driver.find_element(By.TAG_NAME, "h1").text, name
        driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
        seen["errors"][name] = errors_in_console(driver)
        seen["contrast"] += [(name, *c) for c in driver.execute_script(CONTRAST_JS)]
        seen["unlabelled"][name] = driver.execute_script(UNLABELLED_JS)
        if name == "incident":
            rows = driver.find_elements(By.CSS_SELECTOR, "#timeline tbody tr[data-decision]")
            seen["timeline"] = [r.get_attribute("data-decision") for r in rows]
            seen["members"] = [
                r.get_attribute("data-identity")
                for r in driver.find_elements(By.CSS_SELECTOR, "#members tr[data-identity]")
            ]
        if name == "silences":
            seen["tabs"] = tab_through(driver, 20)
    return seen


def tab_through(driver: Any, n: int) -> list[list[str]]:
    """Press Tab `n` times from the top of the page: what has the focus after each, and its outline."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    driver.execute_script("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0);")
    focused = []
    for _ in range(n):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        now = driver.execute_script(FOCUSED_JS)
        if now[0] == "BODY":  # past the last control: the focus left the page
            break
        focused.append(now)
    return focused


async def test_every_page_in_a_browser(snow: Snow, make_bridge: Any, browser: Any) -> None:
    """Log in through the form; every page loads without a console error and is saved as a screenshot; the
    timeline shows the API's audit trail; keyboard, labels, focus and contrast hold."""
    bridge = await make_bridge(mapping(snow.url), admin_token=TOKEN, viewer_token=VIEWER)
    url = base_url(bridge)
    payload = group(alert(), alert(device="/dev/sda1", instance='<b>db</b>"&'))
    payload["alerts"].append({"status": "firing", "labels": "not-a-mapping"})  # a dead letter to show
    await post(webhook_url(bridge), payload)
    await call("POST", url + "/api/v1/silences", body={"matchers": ['team="db"'], "duration": "1h", "comment": "c"})
    incidents = await eventually(lambda: _with_tickets(url, 2), within=20)
    incident = incidents[0]["id"]
    shown = (await call("GET", url + "/api/v1/incidents/" + incident))[1]

    await asyncio.to_thread(log_in, browser, url, TOKEN)
    seen = await asyncio.to_thread(visit_every_page, browser, url, incident)

    assert seen["errors"] == {name: [] for name in seen["errors"]}
    assert seen["timeline"] == [e.get("decision") or e.get("kind") or e.get("event") or "entry" for e in shown["audit"]]
    assert sorted(seen["members"]) == sorted(shown["members"])
    assert seen["unlabelled"] == {name: [] for name in seen["unlabelled"]}
    low = [c for c in seen["contrast"] if c[3] < 4.5]
    assert not low, low
    assert len(seen["contrast"]) > 50  # it looked at the text of the pages

    tabs = seen["tabs"]
    names = [t[1] for t in tabs]
    assert names[0] == "Skip to content"
    assert names[1:7] == ["Incidents", "Noise", "Silences", "Dead letters", "Heartbeats", "Health"]
    order = [names.index(x) for x in ("matchers", "duration", "comment", "Create silence")]
    assert order == sorted(order), names  # the form's fields in reading order, then its button
    for tag, name, style, width in tabs:
        assert style != "none" and float(width.removesuffix("px")) >= 2, (tag, name, style, width)
    for name in (*PAGES, "incident", "login"):
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 1000


async def _with_tickets(url: str, n: int) -> list[dict[str, Any]] | None:
    found = (await call("GET", url + "/api/v1/incidents"))[1]
    return found if len(found) >= n and all(i["ticket"] for i in found) else None


def make_silence_in_page(driver: Any, url: str, matcher: str) -> str:
    from selenium.webdriver.common.by import By

    driver.get(url + "/ui/silences")
    driver.find_element(By.ID, "matchers").send_keys(matcher)
    duration = driver.find_element(By.ID, "duration")
    duration.clear()
    duration.send_keys("1h")
    driver.find_element(By.ID, "comment").send_keys("disk swap on db-prod-01")
    driver.find_element(By.CSS_SELECTOR, "#silence-form button[type=submit]").click()
    said: str = wait(driver).until(lambda d: d.find_elements(By.ID, "created"))[0].text
    driver.save_screenshot(str(ARTIFACTS / "silence-created.png"))
    assert not errors_in_console(driver)
    return said


async def test_a_silence_made_in_the_page_mutes_the_next_matching_alert(
    snow: Snow, make_bridge: Any, browser: Any
) -> None:
    """The silence typed into the form is the API's; the next DiskFull alert opens nothing, another alert does."""
    bridge = await make_bridge(mapping(snow.url), admin_token=TOKEN)
    url = base_url(bridge)
    await asyncio.to_thread(log_in, browser, url, TOKEN)
    said = await asyncio.to_thread(make_silence_in_page, browser, url, 'alertname="DiskFull"')
    (silence,) = (await call("GET", url + "/api/v1/silences"))[1]
    assert silence["matchers"] == ['alertname="DiskFull"'] and silence["status"] == "active"
    assert silence["id"] in said and silence["comment"] == "disk swap on db-prod-01"

    await post(webhook_url(bridge), group(alert(alertname="DiskFull")))
    await post(webhook_url(bridge), group(alert(alertname="CpuHot")))
    await eventually(lambda: snow.incidents(), within=15)
    listed = (await call("GET", url + "/api/v1/incidents"))[1]
    states = {i["id"].split(":")[0] + ":" + i["state"] for i in listed}
    assert len(snow.incidents()) == 1 and "CpuHot" in snow.incidents()[0]["short_description"]
    muted = [i for i in listed if i["ticket"] is None]
    assert len(muted) == 1 and muted[0]["state"] == "suppressed", states
