"""The image's HEALTHCHECK: is the container's command answering on the port it was given?

Docker runs this inside the container. It reads the command line of the container's first process
(/proc/1/cmdline: `bridge serve --port 9000`, or `bridge simulate servicenow`), so a bridge started
with any --port (or --host) is checked where it listens:

    bridge serve     GET /healthz must answer 200 (the process is up; Redis is not asked)
    bridge simulate  any HTTP answer (the simulators have no /healthz)

BRIDGE_HEALTHCHECK_URL overrides the URL (a command line it cannot read, a wrapper script).
Exit 0 is healthy, 1 unhealthy, as Docker expects.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_PORTS = {"serve": 8080, "simulate": 8081}


def option(args: list[str], name: str) -> str | None:
    """The value of `--name value` or `--name=value` (the last one wins, as in argparse)."""
    found = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            found = args[i + 1]
        elif arg.startswith(name + "="):
            found = arg.split("=", 1)[1]
    return found


def target(args: list[str]) -> tuple[str, bool]:
    """The URL to ask, and whether only a 200 counts (serve) or any HTTP answer does (simulate)."""
    command = next((a for a in args if a in DEFAULT_PORTS), "serve")
    port = option(args, "--port") or str(DEFAULT_PORTS[command])
    host = option(args, "--host") or "127.0.0.1"
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    path = "/healthz" if command == "serve" else "/"
    return f"http://{host}:{port}{path}", command == "serve"


def main() -> int:
    url = os.environ.get("BRIDGE_HEALTHCHECK_URL")
    strict = True
    if not url:
        try:
            with open("/proc/1/cmdline", "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
        except OSError:
            args = []
        url, strict = target(args)
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return 0 if answer.status == 200 else 1
    except urllib.error.HTTPError as exc:  # an answer, not a 200
        if not strict:
            return 0
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
