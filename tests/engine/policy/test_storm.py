"""An outage: 10,000 alerts from 500 hosts. The desk sees a bounded number of calls, not 10,000 tickets."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import aiohttp
import orjson

from tests.amp import alert, group
from tests.conftest import Snow, eventually, post
from tests.engine.policy.test_knobs import config

HOSTS, ALERTS_PER_HOST = 500, 20
MAX_NEW_PER_MINUTE, FLUSH_S = 20, 1.0


async def test_storm_of_10000_alerts_costs_a_bounded_number_of_desk_calls(snow: Snow, make_bridge: Any) -> None:
    """Bound: tickets = the storm limit + the major incident (the count is exact: storm_admit.lua), and each
    ticket gets at most one coalesced note per flush interval while the storm lasts, plus one."""
    cfg = config(
        snow.url,
        correlate={"by": ["{{ labels.instance }}"]},
        storm={"max_new_per_minute": MAX_NEW_PER_MINUTE, "fields": {"short_description": "Major incident: storm"}},
        ticket={"flush_interval": f"{FLUSH_S}s"},
    )
    bridge = await make_bridge(cfg)
    url = f"http://127.0.0.1:{bridge.port}/webhook/alertmanager"
    groups = [
        group(*[alert(instance=f"host{h:03d}:9100", alertname=f"Check{a:02d}") for a in range(ALERTS_PER_HOST)])
        for h in range(HOSTS)
    ]
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        sem = asyncio.Semaphore(16)

        async def send(body: dict[str, Any]) -> int:
            async with (
                sem,
                session.post(url, data=orjson.dumps(body), headers={"Content-Type": "application/json"}) as r,
            ):
                return r.status

        statuses = await asyncio.gather(*[send(g) for g in groups])
    assert statuses == [202] * HOSTS

    await eventually(lambda: len(snow.incidents()) > 0, within=20)
    previous = -1
    while previous != len(snow.store.requests):  # wait until the desk has stopped hearing from us
        previous = len(snow.store.requests)
        await asyncio.sleep(FLUSH_S * 2)
    duration = time.monotonic() - started

    tickets = snow.incidents()
    creates = sum(1 for r in snow.store.requests if r["method"] == "POST")
    notes = sum(1 for r in snow.store.requests if r["method"] == "PATCH")
    print(f"storm: {len(tickets)} tickets, {creates} creates, {notes} notes in {duration:.1f}s")
    assert creates == len(tickets)
    assert len(tickets) == MAX_NEW_PER_MINUTE + 1
    assert sum(t["short_description"] == "Major incident: storm" for t in tickets) == 1
    assert notes <= len(tickets) * (math.ceil(duration / FLUSH_S) + 1)
    assert creates + notes < 0.05 * HOSTS * ALERTS_PER_HOST  # at least 20x fewer calls than alerts
    major = next(t for t in tickets if t["short_description"] == "Major incident: storm")
    absorbed = "\n".join(snow.notes(major))
    assert "host499:9100" in absorbed


def storm_config(desk_url: str, **storm: Any) -> Any:
    """Correlated by host, at most 5 new incidents within the window; `storm` overrides."""
    return config(
        desk_url,
        correlate={"by": ["{{ labels.instance }}"]},
        storm={"max_new_per_minute": 5, "fields": {"short_description": "Major incident: storm"}, **storm},
    )


def majors(snow: Snow) -> list[dict[str, str]]:
    return [t for t in snow.incidents() if t["short_description"] == "Major incident: storm"]


async def test_the_storm_count_is_exact_within_one_batch_and_across_replicas(snow: Snow, make_bridge: Any) -> None:
    """30 new incidents, in one webhook and then in webhooks to two replicas at once: exactly 5 tickets open,
    the rest join the one major incident (no overshoot of a batch or of a replica)."""
    cfg = storm_config(snow.url)
    first, second = await make_bridge(cfg), await make_bridge(cfg)
    url = f"http://127.0.0.1:{first.port}/webhook/alertmanager"
    await post(url, group(*(alert(instance=f"a{i:02d}:9100") for i in range(30))))
    await eventually(lambda: majors(snow) and len(snow.incidents()) == 6)
    await eventually(lambda: "a29:9100" in "\n".join(snow.notes(majors(snow)[0])), within=5)
    assert len(snow.incidents()) == 6

    urls = [f"http://127.0.0.1:{b.port}/webhook/alertmanager" for b in (first, second)]
    await asyncio.gather(*(post(urls[i % 2], group(alert(instance=f"b{i:02d}:9100"))) for i in range(30)))
    await eventually(lambda: "b" in "\n".join(snow.notes(majors(snow)[0])), within=5)
    await asyncio.sleep(0.5)
    assert len(snow.incidents()) == 6, "the storm went on: nothing new opens"


async def test_alerts_outside_the_storms_group_open_normally(snow: Snow, make_bridge: Any) -> None:
    """`storm.group_by`: a storm at one site takes that site's new incidents; another site's alert opens its
    own ticket."""
    bridge = await make_bridge(storm_config(snow.url, group_by=["{{ labels.site }}"]))
    url = f"http://127.0.0.1:{bridge.port}/webhook/alertmanager"
    await post(url, group(*(alert(instance=f"a{i:02d}:9100", site="ams") for i in range(12))))
    await eventually(lambda: len(snow.incidents()) == 6)
    await post(url, group(alert(instance="fra-1:9100", site="fra")))
    await eventually(lambda: any("fra-1:9100" in t["short_description"] for t in snow.incidents()))
    assert len(majors(snow)) == 1 and len(snow.incidents()) == 7


async def test_the_storm_window_is_configurable_and_the_storm_passes(snow: Snow, make_bridge: Any) -> None:
    """`storm.window`: 5 within 600 ms; once a window passes with nothing refused, new incidents open again."""
    bridge = await make_bridge(storm_config(snow.url, window="600ms"))
    url = f"http://127.0.0.1:{bridge.port}/webhook/alertmanager"
    await post(url, group(*(alert(instance=f"a{i:02d}:9100") for i in range(8))))
    await eventually(lambda: len(snow.incidents()) == 6)
    await asyncio.sleep(0.8)
    await post(url, group(alert(instance="later:9100")))
    await eventually(lambda: any("later:9100" in t["short_description"] for t in snow.incidents()), within=5)
    assert len(snow.incidents()) == 7


async def test_a_replay_decides_as_the_live_run_did(snow: Snow, make_bridge: Any, tmp_path: Any) -> None:
    """`bridge replay` of a recording makes the storm decisions the live run made: the same hosts get their
    own tickets and the same ones join the major incident (the storm flag expires on the replay's clock)."""
    from bridge.tools.replay import replay_file

    hosts = [f"h{i:02d}:9100" for i in range(8)] + ["after:9100"]
    gaps = [0.1] * 7 + [1.2]  # seconds between the webhooks: the last one after the storm's window
    cfg = storm_config(snow.url, window="800ms")
    bridge = await make_bridge(cfg)
    url = f"http://127.0.0.1:{bridge.port}/webhook/alertmanager"
    at, lines = 1_700_000_000_000, []
    for host, gap in zip(hosts, [*gaps, 0.0], strict=True):
        body = group(alert(instance=host))
        lines.append(orjson.dumps({"source": "alertmanager", "at": at, "body": body}))
        await post(url, body)
        await asyncio.sleep(gap)
        at += int(gap * 1000)
    await eventually(lambda: any("after:9100" in t["short_description"] for t in snow.incidents()), within=5)
    await asyncio.sleep(0.5)
    live_own = sorted(t["short_description"].split(" on ")[1] for t in snow.incidents() if t not in majors(snow))
    live_majors = len(majors(snow))

    data = cfg.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["desks"]["snow"]["password"] = "s3cret"
    (tmp_path / "mapping.json").write_bytes(orjson.dumps(data))
    (tmp_path / "stream.jsonl").write_bytes(b"\n".join(lines))
    report = await replay_file(tmp_path / "stream.jsonl", [tmp_path / "mapping.json"], settle_s="5s")
    opened = [c for c in report["calls"] if c["action"] == "open"]
    replay_own = sorted(c["fields"]["short_description"].split(" on ")[1] for c in opened if "Major" not in str(c))
    replay_majors = sum(1 for c in opened if c["fields"]["short_description"] == "Major incident: storm")
    assert live_own == replay_own == sorted([*hosts[:5], "after:9100"])  # h05..h07 joined the major incident
    assert live_majors == replay_majors == 1
