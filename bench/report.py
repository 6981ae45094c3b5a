"""Results: one JSON document per run and the same as a Markdown table, side by side in bench/results/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TARGETS = {
    "ingest_vs_alertmanager": ">= 1.0",
    "ingest_vs_aiohttp": ">= 0.6",
    "ingest_repeats_vs_alertmanager_1": ">= 0.6",
    "ingest_repeats_vs_alertmanager_50": ">= 1.0",
    "engine_alerts_per_s": ">= 10000",
    "engine_vs_pipeline": ">= 0.3",
    "lua_large_vs_small_incident": "<= 1.5",
    "e2e_overhead_p99_ms": "< 25",
    "storm_desk_calls": "<= bound",
    "storm_bytes_per_open_alert": "< 1024",
    "soak_redis_memory_plateau": "last half within 10 %",
    "soak_bridge_rss_plateau": "last half within 10 %",
}


def write(results: dict[str, Any], out_dir: Path, stem: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    md_path.write_text(markdown(results))
    if "soak" in results:
        from bench.soak import svg

        (out_dir / f"{stem}-soak.svg").write_text(svg(results["soak"]))
    return json_path, md_path


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _per_call(e: dict[str, Any]) -> float:
    calls = max(1, int(e["evalsha_calls"]))
    return float(e.get("redis_cpu_s_pipeline") or 0) / calls * 1e6


def markdown(r: dict[str, Any]) -> str:
    meta = r["meta"]
    lines = [
        f"# Bench run {meta['started']}",
        "",
        f"`{meta['command']}` — commit `{meta['commit']}`, {meta['cpus']} CPUs, Python {meta['python']}, "
        f"Redis {meta['redis']}, {meta['workers']} worker(s), Python at {_fmt(meta.get('python_ns_per_turn'))} ns "
        "per bare loop turn (the machine's speed today). Every ratio is against a baseline measured in this same run.",
        "",
    ]
    if "ingest" in r:
        ing = r["ingest"]
        lines += [
            f"## Ingest (wrk, {ing['connections']} connections, {ing['seconds']} s; cases: unique = every alert"
            f" unseen, repeats = {ing.get('repeat_pool', '-')} open alerts re-sent, new = every alert a new ticket)",
            "",
            "| case | target | alerts/request | alerts/s | requests/s | p50 ms | p99 ms | server CPU µs/alert"
            " | of which Redis | XADDs per 1,000 alerts | errors |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in ing["rows"]:
            lines.append(
                f"| {row.get('case', 'unique')} | {row['target']} | {row['alerts_per_request']} | "
                f"{_fmt(row['alerts_per_s'])} | {_fmt(row['requests_per_s'])} | {_fmt(row['p50_ms'], 2)} | "
                f"{_fmt(row['p99_ms'], 2)} | {_fmt(row.get('cpu_us_per_alert'))} | "
                f"{_fmt(row.get('redis_cpu_us_per_alert'))} | {_fmt(row.get('xadds_per_1000_alerts'))} |"
                f" {row['errors']} |"
            )
        lines += [
            "",
            "| case | bridge row | alerts/request | ÷ aiohttp (b) | ÷ Alertmanager (c)"
            " | CPU µs/alert (Alertmanager's) |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for q in ing["ratios"]:
            lines.append(
                f"| {q.get('case', 'unique')} | {q['target']} | {q['alerts_per_request']} | "
                f"{_fmt(q['vs_aiohttp'], 3)} | {_fmt(q['vs_alertmanager'], 3)} | "
                f"{_fmt(q.get('cpu_us_per_alert'))} ({_fmt(q.get('alertmanager_cpu_us_per_alert'))}) |"
            )
        lines.append("")
        if ing.get("durability"):
            lines += [
                "What each durability setting (bridge.runtime.durability) costs, against `bridge` (the default,"
                " AOF everysec) of the same run and round (the median of the rounds, their range in brackets):",
                "",
                "| setting | alerts/request | rounds | alerts/s ÷ default | p99 ms (default) | extra CPU µs/alert |",
                "|---|---:|---:|---:|---:|---:|",
            ]
            for d in ing["durability"]:
                low, high = d.get("alerts_per_s_vs_default_range") or (None, None)
                lines.append(
                    f"| {d['target']} | {d['alerts_per_request']} | {d.get('rounds', 1)} | "
                    f"{_fmt(d['alerts_per_s_vs_default'], 3)} [{_fmt(low, 3)}, {_fmt(high, 3)}] | "
                    f"{_fmt(d['p99_ms'], 2)} ({_fmt(d['default_p99_ms'], 2)}) | {_fmt(d['cpu_us_per_alert_extra'])} |"
                )
            lines.append("")
    if "engine" in r:
        e = r["engine"]
        lines += [
            f"## Engine (backlog of {e['alerts']:,} alerts, one engine process, batch {e['batch']})",
            "",
            "| what | alerts/s | seconds | Redis busy s | ratio |",
            "|---|---:|---:|---:|---:|",
            f"| engine: route + Lua + record + XACK | {_fmt(e['engine_alerts_per_s'])} | "
            f"{_fmt(e['engine_s'], 3)} | {_fmt(e.get('redis_cpu_s_engine'), 3)} | {_fmt(e['vs_pipeline'], 3)} |",
            f"| bare pipeline of the same EVALSHA calls (ceiling) | {_fmt(e['pipeline_alerts_per_s'])} | "
            f"{_fmt(e['pipeline_s'], 3)} | {_fmt(e.get('redis_cpu_s_pipeline'), 3)} | 1.000 |",
            "",
            f"Engine process CPU: {_fmt(e.get('engine_cpu_us_per_alert'))} µs per alert; Redis busy "
            f"{_fmt(_per_call(e))} µs per apply_alert.lua call.",
            "",
        ]
    if "lua" in r:
        from bench.lua import markdown as lua_rows

        lines += lua_rows(r["lua"])
    if "ui" in r:
        from bench.ui import markdown as ui_rows

        lines += ui_rows(r["ui"])
    if "e2e" in r:
        e = r["e2e"]
        lines += [
            f"## End to end ({e['rate']} alerts/s for {e['seconds']} s after {e.get('warmup_s', 0)} s of warm-up, "
            f"desk latency {e['latency_ms']} ms)",
            "",
            "| what | p50 ms | p99 ms | max ms | n |",
            "|---|---:|---:|---:|---:|",
            f"| accepted → desk call answered, minus desk latency | {_fmt(e['overhead_p50_ms'], 2)} | "
            f"{_fmt(e['overhead_p99_ms'], 2)} | {_fmt(e['overhead_max_ms'], 2)} | {e['matched']} |",
            f"| webhook round trip (client) | {_fmt(e['webhook_p50_ms'], 2)} | {_fmt(e['webhook_p99_ms'], 2)} |"
            f" - | {e['sent']} |",
            "",
            f"Achieved rate {_fmt(e['achieved_rate'])} alerts/s; {e['desk_calls']} desk calls for "
            f"{e['sent'] + e.get('warmup_alerts', 0)} alerts ({e.get('warmup_alerts', 0)} of them in the warm-up). "
            f"CPU per alert: the bridge's processes {_fmt(e.get('bridge_cpu_us_per_alert'))} µs, its Redis "
            f"{_fmt(e.get('redis_cpu_us_per_alert'))} µs.",
            "",
        ]
    if "storm" in r:
        s = r["storm"]
        lines += [
            f"## Storm ({s['alerts']:,} alerts, {s['hosts']} hosts x {s['names']} names, correlated by "
            f"{s['correlate']}, desk latency {s['latency_ms']} ms)",
            "",
            "| what | value |",
            "|---|---:|",
            f"| incidents | {_fmt(s['incidents'])} |",
            f"| desk calls (open / note / resolve / other) | {_fmt(s['desk_calls'])} "
            f"({s['opens']} / {s['notes']} / {s['resolves']} / {s['other_calls']}) |",
            f"| bound: incidents x 2 + coalesced note batches | {_fmt(s['desk_call_bound'])} "
            f"(flush interval {s.get('flush_interval', '0s')}) |",
            f"| firing: sent in | {_fmt(s['fire_send_s'], 2)} s ({_fmt(s['fire_send_rate'])} alerts/s) |",
            f"| firing: every ticket open and noted after | {_fmt(s['fire_settled_s'], 2)} s |",
            f"| resolve: every ticket resolved after | {_fmt(s['resolve_settled_s'], 2)} s "
            f"(hold-down {s['resolve_after']}) |",
            f"| Redis memory per open alert | {_fmt(s['bytes_per_open_alert'])} bytes |",
            f"| bridge RSS (all workers) at peak / end | {_fmt(s['bridge_peak_rss_mb'])} / "
            f"{_fmt(s['bridge_rss_mb'])} MB |",
            "",
        ]
    if "soak" in r:
        from bench.soak import rows

        lines += rows(r["soak"])
    if "targets" in r:
        lines += ["## Targets", "", "| target | wanted | measured | met |", "|---|---|---:|---|"]
        for t in r["targets"]:
            lines.append(f"| {t['name']} | {t['wanted']} | {_fmt(t['value'], 3)} | {'yes' if t['met'] else 'no'} |")
        lines.append("")
    return "\n".join(lines)


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets against this run's figures (the single-alert payload for ingest)."""
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, ok: bool) -> None:
        out.append({"name": name, "wanted": TARGETS[name], "value": value, "met": ok})

    for q in r.get("ingest", {}).get("ratios", []):
        case = q.get("case", "unique")
        if q["target"] == "bridge" and q["alerts_per_request"] == 1 and case == "unique":
            if q["vs_alertmanager"] is not None:
                add("ingest_vs_alertmanager", q["vs_alertmanager"], q["vs_alertmanager"] >= 1.0)
            if q["vs_aiohttp"] is not None:
                add("ingest_vs_aiohttp", q["vs_aiohttp"], q["vs_aiohttp"] >= 0.6)
        if q["target"] == "bridge" and case == "repeats" and q["vs_alertmanager"] is not None:
            if q["alerts_per_request"] == 1:  # issue 35, item 4: repeats of open alerts, the common case
                add("ingest_repeats_vs_alertmanager_1", q["vs_alertmanager"], q["vs_alertmanager"] >= 0.6)
            if q["alerts_per_request"] == 50:
                add("ingest_repeats_vs_alertmanager_50", q["vs_alertmanager"], q["vs_alertmanager"] >= 1.0)
    if "engine" in r:
        e = r["engine"]
        add("engine_alerts_per_s", e["engine_alerts_per_s"], e["engine_alerts_per_s"] >= 10_000)
        add("engine_vs_pipeline", e["vs_pipeline"], (e["vs_pipeline"] or 0) >= 0.3)
    if "lua" in r:
        worst = r["lua"]["worst_ratio"]
        add("lua_large_vs_small_incident", worst, worst <= 1.5)
    if "e2e" in r:
        add("e2e_overhead_p99_ms", r["e2e"]["overhead_p99_ms"], r["e2e"]["overhead_p99_ms"] < 25)
    if "storm" in r:
        add("storm_desk_calls", r["storm"]["desk_calls"], r["storm"]["desk_calls"] <= r["storm"]["desk_call_bound"])
        per = r["storm"]["bytes_per_open_alert"]
        add("storm_bytes_per_open_alert", per, per < 1024)
    if "soak" in r:
        soak = r["soak"]
        add("soak_redis_memory_plateau", soak["redis_spread_last_half"], soak["redis_plateau"])
        add("soak_bridge_rss_plateau", soak["rss_spread_last_half"], soak["rss_plateau"])
    return out
