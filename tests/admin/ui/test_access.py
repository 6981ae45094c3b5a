"""Who reaches the status page: nothing without a login, a signed HttpOnly SameSite=Strict cookie, CSRF on
every form, and the viewer token that reads but never changes."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from bridge.admin.ui import auth
from bridge.core import keys
from tests.admin.ui.conftest import VIEWER, UiClient
from tests.running import TOKEN, base_url, call

PAGES = ["/ui/incidents", "/ui/incidents/prometheus:x:1", "/ui/noise", "/ui/silences", "/ui/dead-letters",
         "/ui/heartbeats", "/ui/health", "/ui/anything-else"]  # fmt: skip
FORMS = ["/ui/silences", "/ui/silences/abc/expire", "/ui/dead-letters/1-0/retry", "/ui/dead-letters/1-0/drop",
         "/ui/logout"]  # fmt: skip


async def test_nothing_without_a_login(client: UiClient, redis: aioredis.Redis) -> None:
    """Every page and form redirects to the login page without a session; a form changes nothing."""
    for path in PAGES:
        status, _, response = await client.get(path)
        assert status == 303, path
        assert response.headers["Location"].startswith("/ui/login?next="), path
    for path in FORMS:
        status, _, response = await client.post(path, {"matchers": 'team="db"', "duration": "1h", "csrf": "x"})
        assert status == 303 and response.headers["Location"].startswith("/ui/login"), path
    assert await redis.hlen(keys.SILENCES) == 0
    status, _, _ = await client.get("/ui/login")
    assert status == 200
    status, css, response = await client.get("/ui/static/ui.css")
    assert status == 200 and "color" in css and response.headers["Content-Type"].startswith("text/css")


async def test_login_sets_a_strict_httponly_cookie_and_refuses_a_wrong_token(client: UiClient) -> None:
    """A wrong token is refused with a message; the right one sets HttpOnly, SameSite=Strict, Path=/ui, Secure
    only over https (as a proxy says), and leads to the page asked for, never to another site."""
    _, text, _ = await client.get("/ui/login")
    csrf = text.split('name="csrf" value="')[1].split('"')[0]
    status, text, _ = await client.post("/ui/login", {"token": "wrong", "csrf": csrf})
    assert status == 401 and "neither the admin token nor the viewer token" in text
    status, text, _ = await client.post("/ui/login", {"token": TOKEN, "csrf": "forged"})
    assert status == 403 and "did not come from this page" in text

    response = await client.login(TOKEN)
    cookie = response.cookies[auth.COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/ui"
    assert not cookie["secure"]
    assert response.headers["Location"] == "/ui/incidents"
    status, text, _ = await client.get("/ui/incidents")
    assert status == 200 and "Log out" in text

    other = UiClient(client.url)
    try:
        response = await other.login(TOKEN, **{"X-Forwarded-Proto": "https"})
        assert response.cookies[auth.COOKIE]["secure"]
    finally:
        await other.close()

    home = "/ui/incidents"
    for target, lands in [("/ui/noise", "/ui/noise"), ("//evil.example/x", home),
                          ("https://evil.example/", home), ("/ui//evil.example", home)]:  # fmt: skip
        fresh = UiClient(client.url)
        try:
            _, text, _ = await fresh.get("/ui/login")
            csrf = text.split('name="csrf" value="')[1].split('"')[0]
            status, _, response = await fresh.post("/ui/login", {"token": TOKEN, "csrf": csrf, "next": target})
            assert (status, response.headers["Location"]) == (303, lands), target
        finally:
            await fresh.close()


async def test_a_forged_or_stale_cookie_is_no_session(ui_bridge: Any) -> None:
    """A cookie whose role was changed, one signed under another token and an expired one all lead to the login."""
    rt = ui_bridge.runtime
    viewer = auth.issue(rt, "viewer")
    forged = "admin" + viewer.removeprefix("viewer")
    expired = auth.issue(rt, "admin", now_s=0)
    sound = auth.issue(rt, "admin")
    rt.admin_token = "another-token"
    foreign = auth.issue(rt, "admin")
    rt.admin_token = TOKEN
    assert auth.read(rt, sound) is not None and auth.read(rt, viewer) is not None
    for value in (forged, expired, foreign, viewer[:-1] + ("0" if viewer[-1] != "0" else "1"), "admin.1.2.3", ""):
        c = UiClient(base_url(ui_bridge))
        try:
            c.session.cookie_jar.update_cookies({auth.COOKIE: value})
            status, _, response = await c.get("/ui/incidents")
            assert status == 303 and response.headers["Location"].startswith("/ui/login"), value
        finally:
            await c.close()
    rt.admin_token = TOKEN + "-rotated"  # a new token ends the sessions of the old one
    assert auth.read(rt, sound) is None


async def test_every_form_needs_the_sessions_csrf_token(client: UiClient, redis: aioredis.Redis) -> None:
    """A logged-in POST without the session's CSRF token, or with another session's, is refused (403) and
    changes nothing; with it, the silence is made."""
    await client.login(TOKEN)
    other = UiClient(client.url)
    await other.login(TOKEN)
    theirs = await other.csrf()
    await other.close()
    form = {"matchers": 'team="db"', "duration": "1h", "comment": "x"}
    for token in (None, "", "nonsense", theirs):
        status, text, _ = await client.post("/ui/silences", {**form, **({"csrf": token} if token is not None else {})})
        assert status == 403 and "security token" in text, token
    assert await redis.hlen(keys.SILENCES) == 0
    status, _, response = await client.post("/ui/silences", {**form, "csrf": await client.csrf()})
    assert status == 303 and response.headers["Location"].startswith("/ui/silences?created=")
    assert await redis.hlen(keys.SILENCES) == 1


async def test_the_viewer_token_reads_everything_and_changes_nothing(client: UiClient, redis: aioredis.Redis) -> None:
    """The viewer sees every page but each change is refused with 403 and a message; logging out works."""
    status, created, _ = await call(
        "POST", base_url_of(client) + "/api/v1/silences", body={"matchers": ['team="db"'], "duration": "1h"}
    )
    assert status == 201
    await client.login(VIEWER)
    for path in PAGES[:1] + PAGES[2:-1]:
        status, text, _ = await client.get(path)
        assert status == 200 and "viewer (read-only)" in text, path
    _, text, _ = await client.get("/ui/silences")
    assert "Create silence" not in text and "Expire" not in text  # no form it could not use
    csrf = await client.csrf()
    for path, data in [("/ui/silences", {"matchers": 'team="x"', "duration": "1h"}),
                       (f"/ui/silences/{created['id']}/expire", {}), ("/ui/dead-letters/1-0/drop", {}),
                       ("/ui/dead-letters/1-0/retry", {})]:  # fmt: skip
        status, text, _ = await client.post(path, {**data, "csrf": csrf})
        assert status == 403 and "viewer token" in text, path
    assert (await call("GET", base_url_of(client) + f"/api/v1/silences/{created['id']}"))[1]["status"] == "active"
    assert await redis.hlen(keys.SILENCES) == 1
    status, _, response = await client.post("/ui/logout", {"csrf": csrf})
    assert status == 303 and response.headers["Location"] == "/ui/login"
    assert (await client.get("/ui/incidents"))[0] == 303


async def test_pages_say_what_is_refused_and_carry_the_safe_headers(client: UiClient) -> None:
    """An unknown page is a 404 page, bad input a 400 page with the reason; every page has the CSP and no-store."""
    await client.login(TOKEN)
    status, text, response = await client.get("/ui/nowhere")
    assert status == 404 and "No such page" in text
    assert "script-src" not in response.headers["Content-Security-Policy"]  # default-src 'none': no script at all
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert response.headers["Cache-Control"] == "no-store" and response.headers["X-Frame-Options"] == "DENY"
    for path, said in [("/ui/incidents?state=bogus", "state must be one of"),
                       ("/ui/incidents?route=nope", "no route nope"), ("/ui/incidents?desk=nope", "no desk nope"),
                       ("/ui/incidents?start=-1", "start must be"), ("/ui/dead-letters?after=zzz", "after must be"),
                       ("/ui/incidents/prometheus:no:1", "no incident")]:  # fmt: skip
        status, text, _ = await client.get(path)
        assert status in (400, 404) and said in text, (path, status)


def base_url_of(client: UiClient) -> str:
    return client.url


async def test_refused_logins_are_limited_per_address(client: UiClient, ui_bridge: Any, make_bridge: Any) -> None:
    """Ten wrong tokens from one address are each a 401; the eleventh is a 429 with Retry-After, and
    from then on so is every login from there, the right token's included, until a refused login is
    back (30 s); the limit is in Redis, so another replica refuses the same."""
    for _ in range(10):
        _, text, _ = await client.get("/ui/login")
        csrf = text.split('name="csrf" value="')[1].split('"')[0]
        status, _, _ = await client.post("/ui/login", {"token": "guess", "csrf": csrf})
        assert status == 401
    _, text, _ = await client.get("/ui/login")
    csrf = text.split('name="csrf" value="')[1].split('"')[0]
    status, text, response = await client.post("/ui/login", {"token": "guess", "csrf": csrf})
    assert status == 429 and "Too many refused logins" in text
    assert 1 <= int(response.headers["Retry-After"]) <= 30
    csrf = text.split('name="csrf" value="')[1].split('"')[0]  # the 429's own login form
    status, _, response = await client.post("/ui/login", {"token": TOKEN, "csrf": csrf})
    assert status == 429 and int(response.headers["Retry-After"]) <= 30
    status, _, _ = await client.get("/ui/incidents")
    assert status == 303  # not logged in
    replica = UiClient(base_url(await make_bridge(ui_bridge.config, admin_token=TOKEN)))
    try:
        _, text, _ = await replica.get("/ui/login")
        csrf = text.split('name="csrf" value="')[1].split('"')[0]
        status, _, _ = await replica.post("/ui/login", {"token": TOKEN, "csrf": csrf})
        assert status == 429
    finally:
        await replica.close()
