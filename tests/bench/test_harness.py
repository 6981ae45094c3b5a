"""Smoke test of the benchmark harness: a tiny run writes its JSON and Markdown results.

It measures nothing and asserts no timing (timings on a shared machine are noise); it only keeps
`python -m bench` runnable.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, require


@pytest.mark.timeout(60)
def test_quick_run_writes_json_and_markdown(tmp_path: Path) -> None:
    """`python -m bench --quick` runs the engine, lua, e2e and storm sections and writes both result files."""
    require("redis-server")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "engine", "--only", "lua", "--only", "e2e", "--only",
         "storm", "--workers", "1", "--out", str(tmp_path), "--tag", "smoke"],
        cwd=ROOT, capture_output=True, text=True, timeout=55, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    [json_file] = tmp_path.glob("*-smoke.json")
    [md_file] = tmp_path.glob("*-smoke.md")
    results = json.loads(json_file.read_text())
    assert {"meta", "engine", "lua", "e2e", "storm", "targets"} <= results.keys()
    assert results["engine"]["drained"] == results["engine"]["alerts"]
    assert results["e2e"]["matched"] == results["e2e"]["sent"]
    assert results["storm"]["resolve_settled"] is True
    assert len(results["lua"]["rows"]) == 6 and all(row["us_small"] > 0 for row in results["lua"]["rows"])
    assert "## Engine" in md_file.read_text()


@pytest.mark.timeout(120)
def test_roundtrip_compares_the_batcher_with_bare_pipelines() -> None:
    """`python -m bench.roundtrip` prints one row per round-trip size, each with the ratio; no timing is asserted."""
    require("redis-server")
    done = subprocess.run(
        [sys.executable, "-m", "bench.roundtrip", "--rounds", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=110, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split(" | ")[0] for row in rows] == ["| 1", "| 3", "| 10", "| 256"]
    assert all(float(row.rstrip(" |").rsplit(" | ", 1)[1]) > 0 for row in rows)


@pytest.mark.timeout(90)
def test_quick_soak_writes_its_samples_and_figure(tmp_path: Path) -> None:
    """`python -m bench --quick --only soak` samples Redis memory and the bridge's RSS and draws them as an SVG."""
    require("redis-server")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "soak", "--workers", "1", "--out", str(tmp_path),
         "--tag", "soak"],
        cwd=ROOT, capture_output=True, text=True, timeout=85, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    [json_file] = tmp_path.glob("*-soak.json")
    [svg_file] = tmp_path.glob("*-soak-soak.svg")
    soak = json.loads(json_file.read_text())["soak"]
    assert soak["sent"] == soak["alerts"] and soak["failures"] == 0
    assert len(soak["samples"]) >= 2 and all(
        s["redis_used_memory"] > 0 and s["bridge_rss"] > 0 for s in soak["samples"]
    )
    assert svg_file.read_text().startswith("<svg") and "<polyline" in svg_file.read_text()


@pytest.mark.timeout(150)
def test_quick_ingest_compares_each_durability_setting_with_the_default(tmp_path: Path) -> None:
    """`--ingest-targets bridge,bridge-fsync,bridge-wait1`: every request of each setting answered 2xx (the
    replica is in sync, so WAIT is met), each setting reported against the default of its round."""
    require("redis-server")
    require("wrk")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "ingest", "--ingest-targets",
         "bridge,bridge-fsync,bridge-wait1", "--ingest-rounds", "2", "--ingest-cases", "unique", "--workers", "1",
         "--out", str(tmp_path), "--tag", "durability"],
        cwd=ROOT, capture_output=True, text=True, timeout=140, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    [json_file] = tmp_path.glob("*-durability.json")
    ingest = json.loads(json_file.read_text())["ingest"]
    rows = ingest["rows"]
    assert {(r["target"], r["round"]) for r in rows} == {
        (t, n) for t in ("bridge", "bridge-fsync", "bridge-wait1") for n in (0, 1)
    }
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in rows), rows
    compared = {(d["target"], d["alerts_per_request"]): d for d in ingest["durability"]}
    assert set(compared) == {(t, n) for t in ("bridge-fsync", "bridge-wait1") for n in (1, 50)}
    assert all(d["rounds"] == 2 and d["alerts_per_s_vs_default"] > 0 for d in compared.values()), compared
    assert "What each durability setting" in (tmp_path / json_file.name.replace(".json", ".md")).read_text()


@pytest.mark.timeout(180)
def test_the_cluster_section_drains_on_one_redis_and_on_a_cluster(tmp_path: Path) -> None:
    """`python -m bench.cluster` with a tiny backlog: each kind (one Redis, a cluster of three masters) drains
    it with one and with two engine processes, and the figures are written; no timing is asserted."""
    require("redis-server")
    done = subprocess.run(
        [sys.executable, "-m", "bench.cluster", "--alerts", "300", "--processes", "1,2", "--out", str(tmp_path),
         "--tag", "smoke"],
        cwd=ROOT, capture_output=True, text=True, timeout=170, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    [json_file] = tmp_path.glob("*-smoke.json")
    runs = json.loads(json_file.read_text())["cluster"]["runs"]
    assert [(r["kind"], r["processes"]) for r in runs] == [
        ("one Redis", 1),
        ("cluster (3 masters)", 1),
        ("one Redis", 2),
        ("cluster (3 masters)", 2),
    ]
    assert all(r["alerts_per_s"] > 0 and r["busiest_redis_us_per_alert"] > 0 for r in runs)
    assert "| cluster (3 masters) | 2 |" in next(tmp_path.glob("*-smoke.md")).read_text()


@pytest.mark.timeout(150)
def test_quick_ingest_runs_the_repeats_and_new_tickets_cases(tmp_path: Path) -> None:
    """`--ingest-cases repeats,new`: the repeats case's alerts are open incidents with their tickets before wrk
    runs, every request of both cases is answered 2xx, and each case has its own ratios (Alertmanager's where
    it is installed)."""
    require("redis-server")
    require("wrk")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "ingest", "--ingest-targets", "bridge,alertmanager",
         "--ingest-cases", "repeats,new", "--repeat-pool", "100", "--workers", "1", "--out", str(tmp_path),
         "--tag", "cases"],
        cwd=ROOT, capture_output=True, text=True, timeout=140, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    [json_file] = tmp_path.glob("*-cases.json")
    ingest = json.loads(json_file.read_text())["ingest"]
    bridge = [r for r in ingest["rows"] if r["target"] == "bridge"]
    wanted = {(c, n) for c in ("repeats", "new") for n in (1, 50)}
    assert {(r["case"], r["alerts_per_request"]) for r in bridge} == wanted
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in ingest["rows"]), ingest["rows"]
    assert all(r["preopened"] == 100 for r in bridge if r["case"] == "repeats"), bridge
    assert {(q["case"], q["alerts_per_request"]) for q in ingest["ratios"] if q["target"] == "bridge"} == wanted


@pytest.mark.timeout(60)
async def test_wrk_sends_each_unique_alert_once() -> None:
    """The unique case's alerts are unique across wrk's threads too: each thread numbers its alerts by its
    own `tid` (a local `tid` once stayed 0 in every thread, and every alert went twice, as from an HA pair)."""
    require("wrk")
    import asyncio
    import collections

    import orjson
    from aiohttp import web

    from bench.common import wrk
    from tests.conftest import start_app

    seen: collections.Counter[str] = collections.Counter()

    async def take(request: web.Request) -> web.Response:
        for one in orjson.loads(await request.read())["alerts"]:
            seen[one["fingerprint"]] += 1
        return web.json_response({}, status=202)

    app = web.Application()
    app.router.add_post("/webhook/alertmanager", take)
    runner, url = await start_app(app)
    try:
        target = url + "/webhook/alertmanager"
        result = await asyncio.to_thread(
            lambda: wrk(target, fmt="webhook", per_request=3, connections=8, seconds=1.0, threads=2)
        )
    finally:
        await runner.cleanup()
    assert result.requests > 10 and sum(seen.values()) >= result.requests * 3
    assert [fp for fp, n in seen.items() if n > 1] == []
