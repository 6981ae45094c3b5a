"""Client CPU per Redis round trip: the bridge's shared round trips (bridge/runtime/batch.py) against bare
redis-py pipelines of the same EVALSHA calls, interleaved in one process.

    python -m bench.roundtrip [--rounds 10]

Baselines, in the same run: a redis-py pipeline on a client with no socket timeout (the cheapest
redis-py round trip), and one on a client with redis-py's default 5 s socket timeout (a timer per
reply). Each figure is the median of the rounds; the ratio is the batcher's over the bare pipeline's.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import procs
from bridge.runtime.batch import Batcher
from bridge.runtime.connect import connect

SIZES = (1, 3, 10, 256)  # commands per round trip: a webhook's XADD ... an engine batch


async def measure(rounds: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as work, procs.redis_server(Path(work) / "redis") as server:
        bare, timed = connect(server.url, socket_timeout=None), connect(server.url, socket_timeout=5)
        sha = await bare.script_load("return ARGV[1]")

        async def nothing() -> None:
            return None

        batcher = Batcher(bare, nothing, timeout=5)
        arg = "x" * 200
        rows = []
        for size in SIZES:

            def queued(client: Any, size: int = size) -> Any:
                pipe = client.pipeline(transaction=False)
                for i in range(size):
                    pipe.execute_command("EVALSHA", sha, 0, i, arg, arg, arg)
                return pipe

            sides: dict[str, Callable[[], Awaitable[Any]]] = {
                "batcher": lambda: batcher.execute(queued(bare)),
                "pipeline": lambda: queued(bare).execute(),
                "pipeline, 5 s socket timeout": lambda: queued(timed).execute(),
            }
            repeats = max(20, 3000 // size)
            taken: dict[str, list[float]] = {name: [] for name in sides}
            for _ in range(rounds):
                for name, call in sides.items():
                    started = time.process_time()
                    for _ in range(repeats):
                        await call()
                    taken[name].append((time.process_time() - started) / repeats * 1e6)
            median = {name: sorted(v)[len(v) // 2] for name, v in taken.items()}
            rows.append({"commands": size, **{f"{k} us": round(v, 1) for k, v in median.items()}})
            rows[-1]["batcher / pipeline"] = round(median["batcher"] / median["pipeline"], 3)
        await batcher.aclose()
        await bare.aclose()
        await timed.aclose()
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.roundtrip")
    parser.add_argument("--rounds", type=int, default=10)
    rows = asyncio.run(measure(parser.parse_args().rounds))
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---:|" * len(rows[0]))
    for row in rows:
        print("| " + " | ".join(str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()
