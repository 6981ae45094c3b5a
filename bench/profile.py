"""Profile the bridge under the ingest load with py-spy; print where its time goes.

    python -m bench.profile [--target ingress-only|bridge] [--case unique|repeats|new] [--per 1] [--seconds 8]

Runs one worker under wrk's load (the ingest section's case: its mapping, desk and alerts; repeats are
sent once first, so that wrk's are repeats of open alerts), samples it with `py-spy record` (collapsed stacks, kept in
bench/results/profiles/), and prints the functions with the largest inclusive and self share.
The engine section runs in-process, so it is profiled as a whole:
`py-spy record -f raw -o engine.txt -- python -m bench --only engine`, then `--summarize engine.txt`.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from bench.common import wrk

OUT = Path(__file__).resolve().parent / "results" / "profiles"
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:]*)(?::\d+)?\)$")


def summarize(collapsed: Path, top: int = 25) -> str:
    """Top functions by inclusive and by self samples, from py-spy's raw (collapsed) output."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = [_name(f) for f in stack.split(";")]
        for name in set(frames):
            inclusive[name] += count
        own[frames[-1]] += count
    out = [f"{total} samples", "", "inclusive %  function"]
    out += [f"{100 * n / total:10.1f}  {name}" for name, n in inclusive.most_common(top)]
    out += ["", "self %      function"]
    out += [f"{100 * n / total:10.1f}  {name}" for name, n in own.most_common(top)]
    return "\n".join(out)


LAYERS = (  # the first layer named from the leaf up takes the sample
    ("logging (structlog render, write and flush per line)", ("structlog", "bridge/core/logs.py", "PrintLogger")),
    ("redis-py (pipeline pack, send, parse)", ("redis/", "bridge/runtime/batch.py")),
    ("parse and validate (pydantic)", ("adapters/sources", "pydantic")),
    (
        "bridge handler and middleware",
        ("bridge/ingress", "bridge/runtime/http.py", "uuid", "prometheus_client", "bridge/runtime/metrics"),
    ),
    (
        "engine (routing, Jinja, Lua step wrappers)",
        ("bridge/engine", "bridge/core/routing", "jinja2", "bridge/runtime/scripts"),
    ),
    ("delivery (leases, outbox, desk calls)", ("bridge/delivery", "adapters/desks")),
)


def layers(collapsed: Path) -> str:
    """Share of samples per layer of the bridge, for the results table."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        layer = "aiohttp, event loop, other"
        for frame in reversed(frames):
            found = next((name for name, marks in LAYERS if any(m in frame for m in marks)), None)
            if found:
                layer = found
                break
        counts[layer] += count
    return "\n".join(f"{100 * n / max(1, total):5.1f} %  {name}" for name, n in counts.most_common())


def _name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame
    file = match["file"]
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{match['func']} ({file})"


def record(pid: int, seconds: float, out: Path) -> None:
    spy = shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    subprocess.run(
        [spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "200", "-f", "raw", "-o", str(out),
         "--nonblocking"],
        check=True, capture_output=True,
    )  # fmt: skip


def profile_ingest(target: str, per: int, seconds: float, connections: int, case: str = "unique") -> Path:
    from bench import ingest

    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = OUT / f"ingest-{target}-{case}-{per}-{stamp}.txt"
    with tempfile.TemporaryDirectory(prefix="bridge-profile-") as tmp, ExitStack() as stack:
        started = ingest.start(stack, target, Path(tmp), 1, case)
        url, check = started.url + "/webhook/alertmanager", started.check
        mode = f"repeat:{ingest.REPEAT_POOL}" if case == "repeats" else "unique"
        if case == "repeats":
            ingest.preopen(url, "webhook", ingest.REPEAT_POOL, check)
        load = threading.Thread(
            target=wrk,
            args=(url,),
            kwargs={"fmt": "webhook", "per_request": per, "connections": connections, "seconds": seconds + 2,
                    "mode": mode},
        )  # fmt: skip
        load.start()
        time.sleep(1)
        record(started.proc.pids()[0], seconds, out)
        load.join()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--target", choices=["ingress-only", "bridge"], default="ingress-only")
    parser.add_argument("--case", choices=["unique", "repeats", "new"], default="unique")
    parser.add_argument("--per", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--summarize", type=Path, help="only summarize an existing collapsed-stack file")
    args = parser.parse_args()
    out = args.summarize or profile_ingest(args.target, args.per, args.seconds, args.connections, args.case)
    print(f"{out}\n")
    print(layers(out) + "\n")
    print(summarize(out))


if __name__ == "__main__":
    main()
