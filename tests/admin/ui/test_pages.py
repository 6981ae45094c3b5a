"""What the status page shows, against real Redis, a running bridge and the ServiceNow simulator: the
incidents list paged and filtered, a timeline as the API has it, hostile alert text escaped, noise per
route, silences validated as the API does, dead letters retried and dropped, and what is wrong."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from bridge.admin.ui import pages
from bridge.admin.ui.render import web_link
from bridge.core import keys
from bridge.process.embedded import EmbeddedRedis
from tests.admin.ui.conftest import UiClient
from tests.amp import alert, group
from tests.conftest import Snow, eventually, mapping, post
from tests.running import TOKEN, base_url, call, scrape, value, webhook_url

ROW_ID = re.compile(r'<tr data-id="([^"]+)">')
DB_ROUTE = {"name": "db", "desk": "snow", "match": ['team="db"'], "correlate": {"by": ["{{ labels.instance }}"]}}


async def incidents_in_api(bridge: Any, n: int) -> list[dict[str, Any]]:
    async def listed() -> list[dict[str, Any]] | None:
        found = (await call("GET", base_url(bridge) + "/api/v1/incidents?limit=1000"))[1]
        return found if len(found) >= n and all(i["ticket"] for i in found) else None

    return await eventually(listed, within=30)


async def test_incidents_are_paged_and_filtered(snow: Snow, make_bridge: Any) -> None:
    """60 incidents on two routes: pages of 50 in the API's order, no row twice; route, state and desk filters."""
    bridge = await make_bridge(mapping(snow.url, extra_routes=[DB_ROUTE]), admin_token=TOKEN)
    alerts = [alert(instance=f"web-{i:02d}:9100") for i in range(45)]
    alerts += [alert(instance=f"db-{i:02d}:9100", team="db") for i in range(15)]
    assert (await post(webhook_url(bridge), group(*alerts)))[0] == 202
    listed = await incidents_in_api(bridge, 60)
    client = UiClient(base_url(bridge))
    try:
        await client.login(TOKEN)
        status, first, _ = await client.get("/ui/incidents")
        assert status == 200
        rows = ROW_ID.findall(first)
        assert len(rows) == pages.PAGE_SIZE and rows == [i["id"] for i in listed[:50]]
        nxt = re.search(r'href="(/ui/incidents\?[^"]*start=50)" id="next-page"', first)
        assert nxt, "a next page link"
        status, second, _ = await client.get(nxt.group(1).replace("&amp;", "&"))
        assert ROW_ID.findall(second) == [i["id"] for i in listed[50:]] and 'id="next-page"' not in second

        _, db, _ = await client.get("/ui/incidents?route=db")
        assert sorted(ROW_ID.findall(db)) == sorted(i["id"] for i in listed if i["route"] == "db")
        assert len(ROW_ID.findall(db)) == 15
        _, resolved, _ = await client.get("/ui/incidents?state=resolved")
        assert ROW_ID.findall(resolved) == []
        _, on_snow, _ = await client.get("/ui/incidents?desk=snow&state=open")
        assert len(ROW_ID.findall(on_snow)) == 50
        ticket = snow.incidents()[0]["number"]
        assert ticket in first + second  # the ticket's number is shown
    finally:
        await client.close()


async def test_a_page_looks_at_a_bounded_part_of_the_index(redis: aioredis.Redis) -> None:
    """A filter that matches nothing among 3,000 incidents looks at LOOK_AT entries, and says where to go on."""
    from bridge.admin import incidents

    async with redis.pipeline(transaction=False) as pipe:
        for i in range(3000):
            base = f"web:{i:08x}"
            pipe.hset(keys.IncidentKeys(base).state, mapping={"state": "open", "epoch": "1", "route": "web"})
            pipe.zadd(keys.INCIDENTS, {base: i})
        await pipe.execute()
    page = await incidents.page_incidents(redis, routes={"db"}, look_at=1000)
    assert (page.rows, page.looked_at, page.next, page.total) == ([], 1000, 1000, 3000)
    page = await incidents.page_incidents(redis, start=2500, state="resolved", look_at=1000)
    assert (page.rows, page.looked_at, page.next) == ([], 500, None)
    page = await incidents.page_incidents(redis, start=10, limit=5)
    assert [r["id"] for r in page.rows] == [f"web:{i:08x}:1" for i in (2989, 2988, 2987, 2986, 2985)]
    assert page.next == 15 and all(r["members"] == 0 for r in page.rows)


async def test_hostile_alert_text_is_escaped_everywhere(snow: Snow, make_bridge: Any) -> None:
    """An alert whose labels and summary carry markup shows it as text on every page: no tag of it survives."""
    bridge = await make_bridge(mapping(snow.url), admin_token=TOKEN)
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    a = alert(instance=hostile, device='"><svg onload=alert(2)>')
    a["annotations"]["summary"] = hostile
    assert (await post(webhook_url(bridge), group(a)))[0] == 202
    (found,) = await incidents_in_api(bridge, 1)
    client = UiClient(base_url(bridge))
    try:
        await client.login(TOKEN)
        for path in ("/ui/incidents", f"/ui/incidents/{found['id']}", "/ui/noise", "/ui/health"):
            status, text, _ = await client.get(path)
            assert status == 200, path
            assert "<script" not in text.lower() and "<img" not in text and "<svg onload" not in text, path
        _, text, _ = await client.get(f"/ui/incidents/{found['id']}")
        assert "&lt;script&gt;" in text  # shown, as text
    finally:
        await client.close()
    assert web_link("javascript:alert(1)") == "" and web_link("https://desk.example/x") == "https://desk.example/x"


async def test_the_timeline_is_the_apis_audit_trail(snow: Snow, make_bridge: Any) -> None:
    """The incident page lists the members and the audit entries the API answers for it, in its order."""
    bridge = await make_bridge(mapping(snow.url), admin_token=TOKEN)
    await post(webhook_url(bridge), group(alert(), alert(device="/dev/sda1")))
    (found,) = await incidents_in_api(bridge, 1)
    await post(webhook_url(bridge), group(alert("resolved"), alert("resolved", device="/dev/sda1")))
    await eventually(lambda: snow.incidents()[0]["state"] == "6", within=15)
    shown = (await call("GET", base_url(bridge) + "/api/v1/incidents/" + found["id"]))[1]
    client = UiClient(base_url(bridge))
    try:
        await client.login(TOKEN)
        _, text, _ = await client.get(f"/ui/incidents/{found['id']}")
    finally:
        await client.close()
    decisions = re.findall(r'<tr data-decision="([^"]+)"', text)
    assert decisions == [e.get("decision") or e.get("kind") or e.get("event") or "entry" for e in shown["audit"]]
    assert {"OPEN", "DESK", "RESOLVE"} <= set(decisions)
    assert sorted(re.findall(r'<tr data-identity="([^"]+)"', text)) == sorted(shown["members"])


async def test_noise_counts_alerts_incidents_tickets_and_desk_calls(
    snow: Snow, make_bridge: Any, redis: aioredis.Redis
) -> None:
    """Six alerts on three instances make three incidents and tickets: the noise page and its Redis bucket say so."""
    bridge = await make_bridge(mapping(snow.url), admin_token=TOKEN)
    alerts = [alert(instance=f"n-{i % 3}:9100", device=f"/dev/sd{i}") for i in range(6)]
    await post(webhook_url(bridge), group(*alerts))
    await incidents_in_api(bridge, 3)
    bucket = keys.noise(bridge.runtime.clock())
    counts = await eventually(lambda: redis.hgetall(bucket))
    await eventually(lambda: _int(redis.hget(bucket, "prometheus|desk_calls"), 3))
    counts = {k.decode(): int(v) for k, v in (await redis.hgetall(bucket)).items()}
    assert counts["prometheus|alerts"] == 6 and counts["prometheus|incidents"] == 3
    assert counts["prometheus|tickets"] == 3 and counts["prometheus|desk_calls"] >= 3
    assert 0 < await redis.pttl(bucket) <= keys.NOISE_KEEP_MS
    client = UiClient(base_url(bridge))
    try:
        await client.login(TOKEN)
        status, text, _ = await client.get("/ui/noise")
    finally:
        await client.close()
    assert status == 200 and "<svg" in text
    row = re.search(r'<table id="noise-hour">.*?<tr data-route="prometheus">(.*?)</tr>', text, re.S)
    assert row
    cells = re.findall(r'<td class="num">([^<]*)</td>', row.group(1))
    assert cells[:4] == ["6", "3", "0", "3"] and cells[5] == "2.0 : 1"
    _, samples = await eventually(lambda: _scrape_noise(base_url(bridge)))
    assert value(samples, "bridge_noise_bucket_fields") >= 4


async def _int(reply: Any, at_least: int) -> bool:
    got = await reply
    return got is not None and int(got) >= at_least


async def _scrape_noise(url: str) -> Any:
    text, samples = await scrape(url)
    return (text, samples) if value(samples, "bridge_noise_bucket_fields") else None


async def test_silences_are_validated_as_the_api_validates_them(client: UiClient, ui_bridge: Any) -> None:
    """A bad matcher, duration or none at all: a 400 page with the API's own words and the form kept; a good one
    is listed by the API and expired from the page."""
    await client.login(TOKEN)
    api = base_url(ui_bridge) + "/api/v1/silences"
    for matchers, duration in [('team=~"("', "1h"), ("team", "1h"), ('team="db"', "soon"), ('team="db"', "-5m")]:
        status, answer, _ = await call("POST", api, body={"matchers": [matchers], "duration": duration})
        assert status == 400, (matchers, duration)
        status, text, _ = await client.post(
            "/ui/silences", {"matchers": matchers, "duration": duration, "csrf": await client.csrf()}
        )
        assert status == 400, (matchers, duration)
        said = re.search(r'id="form-error">([^<]*)<', text)
        assert said and _unescape(said.group(1)).endswith(answer["detail"]), (said, answer)
        assert _unescape(matchers) in _unescape(text)  # the form keeps what was typed
    status, text, _ = await client.post(
        "/ui/silences", {"matchers": "\n \n", "duration": "1h", "csrf": await client.csrf()}
    )
    assert status == 400 and "matchers" in text
    assert (await call("GET", api))[1] == []

    status, _, response = await client.post(
        "/ui/silences", {"matchers": 'team="db"\nseverity=~"critical|major"', "duration": "2h", "comment": "upgrade",
                         "csrf": await client.csrf()},
    )  # fmt: skip
    assert status == 303
    (made,) = (await call("GET", api))[1]
    assert made["matchers"] == ['team="db"', 'severity=~"critical|major"'] and made["status"] == "active"
    assert made["created_by"] == "status page (admin)" and made["comment"] == "upgrade"
    assert response.headers["Location"] == f"/ui/silences?created={made['id']}"
    status, _, _ = await client.post(f"/ui/silences/{made['id']}/expire", {"csrf": await client.csrf()})
    assert status == 303
    assert (await call("GET", api + "/" + made["id"]))[1]["status"] == "expired"
    status, text, _ = await client.post("/ui/silences/nope/expire", {"csrf": await client.csrf()})
    assert status == 404 and "no silence nope" in text


def _unescape(text: str) -> str:
    return text.replace("&#34;", '"').replace("&quot;", '"').replace("&#39;", "'").replace("&lt;", "<").replace(
        "&gt;", ">").replace("&amp;", "&")  # fmt: skip


async def test_dead_letters_are_retried_and_dropped_from_the_page(
    snow: Snow, make_bridge: Any, redis: aioredis.Redis
) -> None:
    """A refused open is listed and retried once the mapping is fixed (the ticket comes); a bad alert can only be
    dropped: its retry says why not."""
    config = mapping(snow.url)
    broken = config.model_copy(
        update={"desks": {"snow": config.desks["snow"].model_copy(update={"table": "no_such_table"})}}
    )
    bridge = await make_bridge(broken, admin_token=TOKEN)
    await post(webhook_url(bridge), group(alert()))
    letters = await eventually(lambda: redis.xrange(keys.DLQ), within=10)
    letter_id = letters[0][0].decode()
    client = UiClient(base_url(bridge))
    try:
        await client.login(TOKEN)
        _, text, _ = await client.get("/ui/dead-letters")
        assert ROW_ID.findall(text) == [letter_id] and "desk_rejected" in text and "Retry" in text
        bridge.runtime.use_config(config)
        await bridge.runtime.open_desks()
        status, _, response = await client.post(f"/ui/dead-letters/{letter_id}/retry", {"csrf": await client.csrf()})
        assert status == 303 and "done=retried" in response.headers["Location"]
        await eventually(lambda: snow.incidents(), within=10)
        status, text, _ = await client.post(f"/ui/dead-letters/{letter_id}/retry", {"csrf": await client.csrf()})
        assert status == 404

        bad = group(alert())
        bad["alerts"].append({"status": "firing", "labels": "not-a-mapping"})
        await post(webhook_url(bridge), bad)
        bad_letter = (await eventually(lambda: redis.xrange(keys.DLQ)))[0][0].decode()
        _, text, _ = await client.get("/ui/dead-letters?kind=bad_alert")
        assert ROW_ID.findall(text) == [bad_letter]
        status, text, _ = await client.post(f"/ui/dead-letters/{bad_letter}/retry", {"csrf": await client.csrf()})
        assert status == 409 and "not a desk or upstream call" in text
        status, _, _ = await client.post(f"/ui/dead-letters/{bad_letter}/drop", {"csrf": await client.csrf()})
        assert status == 303 and await redis.xlen(keys.DLQ) == 0
        status, text, _ = await client.post("/ui/dead-letters/not-an-id/drop", {"csrf": await client.csrf()})
        assert status == 404
    finally:
        await client.close()


async def test_health_says_what_is_wrong(
    snow: Snow, make_bridge: Any, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """All well, then a desk's open breaker, a rejected reload and Redis gone, each said in words."""
    from tests.running import write_mapping

    path = write_mapping(tmp_path / "mapping.json", snow)
    bridge = await make_bridge(mapping(snow.url), admin_token=TOKEN, config_paths=[str(path)], reload_poll_s=0.1)
    client = UiClient(base_url(bridge))
    try:
        await client.login(TOKEN)
        _, text, _ = await client.get("/ui/health")
        assert "All is well" in text
        rt = bridge.runtime
        await rt.redis.set(keys.desk_breaker("snow"), f"{rt.clock() + 60_000}|prometheus:abc", px=60_000)
        path.write_text("routes: [this is not a mapping")
        await eventually(lambda: rt.reload_error, within=10)
        _, text, _ = await client.get("/ui/health")
        assert "desk snow: circuit breaker open" in text and "mapping reload rejected" in text
        assert "mapping.json" in text  # the rejected file is named
        redis_server.stop()
        status, text, _ = await client.get("/ui/health")
        assert status == 200 and "not ready" in text and "Redis is unreachable" in text
        status, text, _ = await client.get("/ui/incidents")
        assert status == 503 and "Redis is unreachable" in text
        redis_server.start()
        await asyncio.sleep(0)
    finally:
        await client.close()


def test_the_chart_scales_to_the_largest_figure() -> None:
    """Bars are proportional to their values; a zero is no bar; the legend names each figure."""
    from bridge.admin.ui import chart

    rows = [{"name": "a", "day": {"alerts": 100, "incidents": 10, "tickets": 10, "desk_calls": 50}},
            {"name": "b", "day": {"alerts": 0, "incidents": 0, "tickets": 0, "desk_calls": 0}}]  # fmt: skip
    drawn = chart.bars(rows, "day")
    widths = [[b["w"] for b in g["items"]] for g in drawn["groups"]]
    assert widths == [[chart.PLOT_W, chart.PLOT_W // 10, chart.PLOT_W // 10, chart.PLOT_W // 2], [0, 0, 0, 0]]
    assert [legend for _, legend, _ in drawn["series"]] == ["alerts in", "incidents", "tickets opened", "desk calls"]
    assert orjson.dumps(drawn)  # plain data for the template


async def test_heartbeats_show_their_state_and_an_expired_one_is_a_health_problem(snow: Snow, make_bridge: Any) -> None:
    """Two clusters ping; one falls silent: the page lists both with their state, health names the expired one."""
    from tests.engine.test_heartbeats import beat_mapping, http_ping

    bridge = await make_bridge(beat_mapping(snow), admin_token=TOKEN)
    client = UiClient(base_url(bridge))
    try:
        await client.login(TOKEN)
        _, text, _ = await client.get("/ui/heartbeats")
        assert "No heartbeat has pinged yet" in text and "Configured: prom" in text
        await http_ping(bridge, cluster="eu")
        await http_ping(bridge, cluster="us")

        async def eu_expired() -> str | None:
            await http_ping(bridge, cluster="us")  # us keeps pinging
            _, page, _ = await client.get("/ui/heartbeats")
            return page if page.count("st-expired") == 1 else None

        text = await eventually(eu_expired, within=20, interval=0.2)
        assert "cluster=eu" in text and "cluster=us" in text and "st-ok" in text
        _, health, _ = await client.get("/ui/health")
        assert re.search(r"heartbeat prom/\w+ expired", health)
    finally:
        await client.close()
