"""The documentation runs as written: every runnable shell block of README.md and docs/*.md.

A block is runnable when its fence's info string is `sh runnable` (or `bash runnable`):

    ```sh runnable
    bridge check-config bridge/samples/example.yaml
    ```

Any other block is an illustration and is not run. A runnable block is pasted whole into a shell at
the repository's root by a reader, so it must stop whatever it starts (the Quick start ends with
`kill $sim $bridge`) and wait for what it starts before using it (a `while ! curl -sf ...; do sleep 0.2; done`
loop).

Each block runs with `bash` under `set -euo pipefail`, in a fresh temporary copy of the repository's
tracked files (`git ls-files`), and must exit 0; on failure the assertion shows the block and the end
of its output. Its environment:

- PATH starts with a throwaway virtual environment layered on this test's own (a `.pth` file makes
  every package of the test's environment importable in it), then the test's environment's `bin`. A
  `pip install -e ...` line therefore runs as written and quickly (everything is installed already),
  and installs the copy into the throwaway environment: it never re-points the test's environment at a
  directory about to be deleted.
- PYTHONPATH is the copy, so `bridge` and `adapters` are the copy's code whether the block installs
  or not; the caller's `BRIDGE_*` and mapping variables (`SERVICENOW_*`, `ALERTMANAGER_TOKEN`) are
  removed, and `BRIDGE_DATA_DIR` is a private directory.
- The ports a block names (`localhost:8080`, `--port 8081`) are its own: when one is taken on this
  machine the block runs in a private network namespace (`unshare -rn`), where every port is free; when
  that is not possible either, the block is skipped with the reason.
- A timeout, after which its whole process group is killed; so is whatever it left running.

Some blocks also have their output checked (`EXPECT`): the Quick start must really post the sample
alert, show the incident through the admin API and show the desk call in the metrics.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ("README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")))
FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<code>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
RUNNABLE = {"sh runnable", "bash runnable"}
HEADING = re.compile(r"#{1,6} +(.+?) *")
PORT = re.compile(r"(?:localhost|127\.0\.0\.1):(\d{2,5})\b|--port[ =](\d{2,5})\b")
TIMEOUT_S = 180
# The caller's settings that would change what a block does.
DROPPED = re.compile(r"^(BRIDGE_|SERVICENOW_|ALERTMANAGER_TOKEN$|VIRTUAL_ENV$|PYTHONHOME$)")

# (document, heading) -> patterns its output must contain.
EXPECT: dict[tuple[str, str], tuple[str, ...]] = {
    ("README.md", "Quick start"): (
        r'\{"accepted": ?2, ?"rejected": ?0\}',  # the sample alert group went in
        # the admin API shows its incident, open, with the ticket the simulator gave it
        r'(?m)^\[\{"id": ?"prometheus:[^\n]*"state": ?"open"[^\n]*"ticket": ?\{[^\n]*"display": ?"INC\d+"',
        r'bridge_desk_calls_total\{[^}]*action="open"[^}]*outcome="ok"[^}]*\} 1\.0',  # the metric
    ),
    ("README.md", "alert-ticket-bridge"): (r"demo ok",),  # `bridge demo`, before the first section
    ("docs/operations.md", "CLI"): (r"ok: \d+ source", r'"incident_key"'),
}


@dataclass(frozen=True)
class Block:
    document: str
    line: int
    heading: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.document}:{self.line}"


def runnable_blocks() -> list[Block]:
    blocks = []
    for document in DOCUMENTS:
        text = (ROOT / document).read_text()
        for fence in FENCE.finditer(text):
            if fence["info"].strip() not in RUNNABLE:
                continue
            line = text.count("\n", 0, fence.start()) + 1
            blocks.append(Block(document, line, heading_above(text, line), fence["code"]))
    return blocks


def heading_above(text: str, line: int) -> str:
    """The last Markdown heading before `line`, not counting `#` lines inside fenced blocks."""
    heading, fenced = "", False
    for row in text.splitlines()[: line - 1]:
        if row.startswith("```"):
            fenced = not fenced
        elif not fenced and (found := HEADING.fullmatch(row)):
            heading = found[1]
    return heading


BLOCKS = runnable_blocks()


def test_the_runnable_blocks_are_where_readers_start() -> None:
    """The Quick start is runnable and stops what it starts; each expectation has its block."""
    [quick] = [b for b in BLOCKS if (b.document, b.heading) == ("README.md", "Quick start")]
    assert "curl -sf localhost:8080/readyz" in quick.code, "the Quick start must wait for the bridge"
    assert quick.code.rstrip().splitlines()[-1].startswith("kill "), "the Quick start must stop what it started"
    assert set(EXPECT) <= {(b.document, b.heading) for b in BLOCKS}


@pytest.fixture(scope="module")
def layered_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment whose own site-packages is empty but which sees the test's packages."""
    where = tmp_path_factory.mktemp("docs-venv") / "venv"
    venv.EnvBuilder(with_pip=True).create(where)
    python = where / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ours = {p for p in sys.path if p.endswith("-packages") and Path(p).is_dir()}
    Path(purelib, "_test_environment.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    return where


def copy_of_repository(to: Path) -> Path:
    """The tracked files, as they are in the working tree (a tracked file deleted there is left out)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    for name in listed.decode().split("\0"):
        source = ROOT / name
        if name and source.is_file():
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, to / name)
    return to


def ports(code: str) -> set[int]:
    return {int(a or b) for a, b in PORT.findall(code)}


def taken(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def private_network() -> list[str] | None:
    """The command prefix that runs a command in a network namespace of its own, if this machine allows it."""
    if not (shutil.which("unshare") and shutil.which("ip")):
        return None
    prefix = ["unshare", "--user", "--map-root-user", "--net", "--"]
    probe = subprocess.run([*prefix, "ip", "link", "set", "lo", "up"], capture_output=True)
    return prefix if probe.returncode == 0 else None


def environment(copy: Path, venv_dir: Path, data: Path, *, offline: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not DROPPED.match(k)}
    env["PATH"] = os.pathsep.join([str(venv_dir / "bin"), str(Path(sys.executable).parent), env.get("PATH", "")])
    env["VIRTUAL_ENV"] = str(venv_dir)
    env["PYTHONPATH"] = str(copy)
    env["BRIDGE_DATA_DIR"] = str(data)
    env["HOME"] = env.get("HOME", str(data))
    if offline:  # a private network namespace has no route out: pip should not wait for one
        env["PIP_RETRIES"] = "0"
    return env


@contextlib.contextmanager
def process_group(command: list[str], **kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    """Run `command` in a session of its own; whatever is left of it is stopped on the way out."""
    process = subprocess.Popen(command, start_new_session=True, **kwargs)  # type: ignore[call-overload]
    try:
        yield process
    finally:
        stop_group(process.pid)
        process.wait()


def stop_group(pgid: int) -> None:
    """SIGTERM to the group (a bridge stops gracefully), then SIGKILL to what is still there after 15 s."""
    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


@pytest.mark.timeout(TIMEOUT_S + 60)
@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_runnable_block(block: Block, layered_venv: Path, tmp_path: Path) -> None:
    prefix: list[str] = []
    busy = sorted(p for p in ports(block.code) if taken(p))
    if busy:
        namespace = private_network()
        if namespace is None:
            pytest.skip(f"ports {busy} are taken here and no private network namespace can be made")
        prefix = [*namespace, "bash", "-c", 'ip link set lo up && exec "$@"', "in-namespace"]
    copy = copy_of_repository(tmp_path / "repository")
    data = tmp_path / "data"
    data.mkdir()
    script = tmp_path / "block.sh"
    script.write_text("set -euo pipefail\n" + block.code)
    output = tmp_path / "output.log"
    env = environment(copy, layered_venv, data, offline=bool(prefix))

    command = [*prefix, "bash", str(script)]
    with output.open("wb") as out, process_group(command, cwd=copy, env=env, stdout=out, stderr=out) as run:
        try:
            code: int | None = run.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            code = None
    shown = output.read_text(errors="replace")
    where = f"{block.id} (under {block.heading!r})"
    report = f"{where}:\n{block.code}\n--- its output, last 6000 characters ---\n{shown[-6000:]}"
    assert code is not None, f"timed out after {TIMEOUT_S} s: {report}"
    assert code == 0, f"exited {code}: {report}"
    for pattern in EXPECT.get((block.document, block.heading), ()):
        assert re.search(pattern, shown), f"no match for {pattern!r} in the output of {report}"
