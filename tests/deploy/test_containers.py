"""deploy/ for real, in a Docker engine: the image built from deploy/Dockerfile unchanged, run as a pod runs
it, and the compose flow from a Prometheus rule to a ticket.

Where Docker Hub is out of reach (CI), deploy/ci/stand-ins.sh first builds stand-ins, from Debian's
packages, for the images deploy/ names (the Dockerfile's python base; compose's Redis, Alertmanager and
Prometheus), cached by a hash of what they are made from. Marked `container`: skipped without a Docker
engine, except under CI=1 (.ci/run installs docker.io and starts dockerd).

The pod: a holder container owns the network namespace (as a pod's pause container does); Redis, the
ServiceNow simulator and the bridge join it (`--network container:…`), so every call between them is on
loopback; each has a read-only root, runs as a non-root user and has every capability dropped.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.running import ROOT

pytestmark = [pytest.mark.container, pytest.mark.timeout(900)]

DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "compose" / "compose.yaml"
COMPOSE = yaml.safe_load(COMPOSE_FILE.read_text())
IMAGE = COMPOSE["x-bridge-image"]["image"]  # what compose runs; built here from deploy/Dockerfile
REDIS_IMAGE = COMPOSE["services"]["redis"]["image"]
SAMPLE = json.loads((ROOT / "bridge" / "samples" / "alertmanager_firing.json").read_text())
TOKEN = "container-test-token"


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def wait_for(check: Callable[[], Any], within: float, interval: float = 0.5, what: str = "") -> Any:
    """Poll `check` until it returns a truthy value; fail with its last value."""
    deadline = time.monotonic() + within
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what or 'condition'} not met within {within}s; last value: {last!r}")
        time.sleep(interval)


def http(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    """One HTTP call: (status, parsed JSON or text); a refused connection is status 0."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            status, text = answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, None
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def inspect(container: str, template: str) -> str:
    return docker("inspect", "-f", template, container).stdout.strip()


def health(container: str) -> str:
    return inspect(container, "{{if .State.Health}}{{.State.Health.Status}}{{end}}")


# -- the engine and the images ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def engine() -> None:
    """A Docker engine that answers; without one skip, except under CI=1 where it is a failure."""
    problem = ""
    if not shutil.which("docker"):
        problem = "no docker command"
    else:
        try:
            result = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
            problem = "" if result.returncode == 0 else f"docker info: {result.stderr.strip()[:300]}"
        except subprocess.TimeoutExpired:
            problem = "docker info did not answer within 30 s"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"no Docker engine ({problem}); .ci/run installs docker.io and starts dockerd")
        pytest.skip(f"no Docker engine ({problem})")


@pytest.fixture(scope="session")
def image(engine: None) -> str:
    """deploy/Dockerfile built unchanged (on the stand-ins where the real bases cannot be pulled)."""
    started = time.monotonic()
    stand_ins = subprocess.run(
        ["bash", str(DEPLOY / "ci" / "stand-ins.sh"), "all"], capture_output=True, text=True, timeout=900
    )
    assert stand_ins.returncode == 0, stand_ins.stdout + stand_ins.stderr
    built = time.monotonic()
    docker("build", "-q", "--network", "host", "-f", str(DEPLOY / "Dockerfile"), "-t", IMAGE, str(ROOT), timeout=900)
    took = time.monotonic() - built  # shown with -s: what the stand-ins and the build cost on this machine
    print(f"\nstand-ins {built - started:.1f} s ({stand_ins.stderr.strip()}); image build {took:.1f} s")
    return str(IMAGE)


def test_image_runs_as_uid_and_gid_10001_and_is_small(image: str) -> None:
    """The user has a group of its own id; pip and the build tools stayed in the build stage; the bridge's
    layers (the venv, mappings, health check) are small, measured over the base's size."""
    assert docker("run", "--rm", "--entrypoint", "id", image).stdout.strip() == (
        "uid=10001(bridge) gid=10001(bridge) groups=10001(bridge)"
    )
    assert inspect(image, "{{.Config.User}}") == "10001:10001"
    assert "healthcheck.py" in inspect(image, "{{json .Config.Healthcheck.Test}}")
    tools = docker("run", "--rm", "--entrypoint", "ls", image, "/opt/bridge/bin").stdout.split()
    assert "bridge" in tools and not {"pip", "pip3"} & set(tools)
    base = (DEPLOY / "Dockerfile").read_text().split("ARG PYTHON_IMAGE=", 1)[1].split()[0]
    total, base_size = int(inspect(image, "{{.Size}}")), int(inspect(base, "{{.Size}}"))
    print(f"\nimage {total / 1e6:.1f} MB = base {base_size / 1e6:.1f} MB + bridge {(total - base_size) / 1e6:.1f} MB")
    assert total - base_size < 45e6, "the bridge's layers grew: see docs/operations.md for what they hold"


# -- the pod ------------------------------------------------------------------------------------------


@dataclass
class Pod:
    name: str
    bridge: str
    snow: str
    redis: str
    bridge_url: str
    snow_url: str

    def records(self) -> list[dict[str, str]]:
        status, body = http("GET", f"{self.snow_url}/_sim/records")
        assert status == 200, (status, body)
        return [row["record"] for row in body["incidents"]]

    def logs(self) -> str:
        return "\n".join(
            f"--- {c}\n{docker('logs', '--tail', '40', c, check=False).stderr}" for c in (self.bridge, self.snow)
        )


@pytest.fixture(scope="module")
def pod(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:
    """Redis, the ServiceNow simulator and the bridge (port 9080, not the default) in one network namespace."""
    name = f"atb-pod-{uuid.uuid4().hex[:8]}"
    folder = tmp_path_factory.mktemp("pod")
    configmap = yaml.safe_load_all((DEPLOY / "kubernetes" / "sidecar" / "configmap.yaml").read_text())
    mapping = folder / "mapping.yaml"
    mapping.write_text(next(d for d in configmap if d["metadata"]["name"] == "bridge-mappings")["data"]["mapping.yaml"])
    mapping.chmod(0o644)
    data = folder / "redis-data"
    data.mkdir()
    data.chmod(0o777)  # Redis runs as 65534; its AOF outlives a stop of its container, as a volume would
    locked = ["--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    joined = ["--network", f"container:{name}", *locked]
    containers = [name, f"{name}-redis", f"{name}-snow", f"{name}-bridge"]
    try:
        docker(
            "run", "-d", "--name", name, *locked, "--user", "65534:65534", "--no-healthcheck",
            "-p", "127.0.0.1::9080", "-p", "127.0.0.1::8081", "--entrypoint", "sleep", image, "infinity",
        )  # fmt: skip
        docker(
            "run", "-d", "--name", f"{name}-redis", *joined, "--user", "65534:65534",
            "-v", f"{data}:/data", REDIS_IMAGE,
            "redis-server", "--bind", "127.0.0.1", "--appendonly", "yes", "--save", "", "--dir", "/data",
        )  # fmt: skip
        docker(
            "run", "-d", "--name", f"{name}-snow", *joined, "--health-interval", "2s",
            image, "simulate", "servicenow", "--host", "0.0.0.0",
        )  # fmt: skip
        docker(
            "run", "-d", "--name", f"{name}-bridge", *joined, "--tmpfs", "/tmp", "--health-interval", "2s",
            "-v", f"{mapping}:/etc/bridge/mappings/mapping.yaml:ro",
            "-e", "BRIDGE_REDIS_URL=redis://127.0.0.1:6379/0", "-e", f"ALERTMANAGER_TOKEN={TOKEN}",
            "-e", "SERVICENOW_URL=http://127.0.0.1:8081", "-e", "SERVICENOW_USER=admin",
            "-e", "SERVICENOW_PASSWORD=admin",
            # Shrunk for the test: a drain cut short by a stop is due again after backoff_max_s (60 s);
            # the shared gauges (bridge_redis_up) are read every gauges_every_s (15 s).
            "-e", "BRIDGE_BACKOFF_MAX_S=5", "-e", "BRIDGE_GAUGES_EVERY_S=1",
            image, "serve", "--host", "0.0.0.0", "--port", "9080", "--config", "/etc/bridge/mappings/mapping.yaml",
        )  # fmt: skip
        port = {p: docker("port", name, f"{p}/tcp").stdout.split()[0] for p in (9080, 8081)}
        result = Pod(name, *containers[3:0:-1], f"http://{port[9080]}", f"http://{port[8081]}")
        wait_for(
            lambda: http("GET", f"{result.bridge_url}/readyz")[0] == 200, 60, what=f"bridge ready\n{result.logs()}"
        )
        yield result
    finally:
        docker("rm", "-f", "-v", *reversed(containers), check=False)


def test_pod_runs_read_only_non_root_without_capabilities(pod: Pod) -> None:
    """Each container: read-only root, every capability dropped, in the holder's network namespace, non-root."""
    holder = inspect(pod.name, "{{.Id}}")
    for container, uid in ((pod.bridge, "10001"), (pod.snow, "10001"), (pod.redis, "65534")):
        assert inspect(container, "{{.HostConfig.ReadonlyRootfs}}") == "true"
        assert inspect(container, "{{json .HostConfig.CapDrop}}") == '["ALL"]'
        assert inspect(container, "{{.HostConfig.NetworkMode}}") == f"container:{holder}"
        status = docker("exec", container, "cat", "/proc/1/status").stdout
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        assert set(uids) == {uid}, (container, uids)
        assert next(line for line in status.splitlines() if line.startswith("CapEff:")).split()[1] == "0" * 16
    denied = docker("exec", pod.bridge, "touch", "/opt/bridge/written", check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr


def test_sample_alert_opens_one_ticket(pod: Pod) -> None:
    """The README's sample alert (two alerts of one problem) -> 202 -> one ServiceNow ticket, and only one."""
    status, body = http("POST", f"{pod.bridge_url}/webhook/alertmanager", SAMPLE, TOKEN)
    assert status == 202 and body["accepted"] == 2, body
    wait_for(lambda: len(pod.records()) >= 1, 30, what=f"a ticket\n{pod.logs()}")
    time.sleep(2)
    records = pod.records()
    assert len(records) == 1 and "NodeFilesystemAlmostOutOfSpace" in records[0]["short_description"], records


def test_healthcheck_is_healthy_on_a_non_default_port(pod: Pod) -> None:
    """The image's HEALTHCHECK asks the port the command was given: the bridge on 9080, the simulator on 8081."""
    for container in (pod.bridge, pod.snow):
        wait_for(lambda c=container: health(c) == "healthy", 45, what=f"{container} healthy ({health(container)})")


def test_docker_stop_with_work_pending_loses_nothing(pod: Pod) -> None:
    """`docker stop` while the bridge's desk call hangs: it stops cleanly within docker's 10 s (grace 8 s), and
    once started again it opens that ticket, once."""
    before = len(pod.records())
    status, _ = http("POST", f"{pod.snow_url}/_sim/faults", {"timeout": 1, "hang_s": 120})
    assert status == 200
    alert = json.loads(json.dumps(SAMPLE))
    for a in alert["alerts"]:
        a["labels"]["alertname"] = "StoppedWhileDelivering"
        a["fingerprint"] = "f" + a["fingerprint"][1:]
    alert["commonLabels"]["alertname"] = alert["groupLabels"]["alertname"] = "StoppedWhileDelivering"
    status, body = http("POST", f"{pod.bridge_url}/webhook/alertmanager", alert, TOKEN)
    assert status == 202, body
    # The simulator took the armed fault: the bridge's create call is in flight, held there.
    wait_for(lambda: http("GET", f"{pod.snow_url}/_sim/faults")[1]["timeout"] == 0, 30, what="the desk call")
    started = time.monotonic()
    docker("stop", pod.bridge, timeout=60)  # docker's default: SIGTERM, SIGKILL after 10 s
    took = time.monotonic() - started
    state = json.loads(inspect(pod.bridge, "{{json .State}}"))
    assert state["ExitCode"] == 0 and not state["OOMKilled"], (state, pod.logs())
    assert took < 10, f"docker stop took {took:.1f} s: SIGKILLed, not stopped"
    assert not [r for r in pod.records() if "StoppedWhileDelivering" in r["short_description"]]
    docker("start", pod.bridge)

    def opened() -> list[dict[str, str]]:
        return [r for r in pod.records() if "StoppedWhileDelivering" in r["short_description"]]

    wait_for(opened, 60, what=f"the pending ticket after the restart\n{pod.logs()}")
    time.sleep(2)
    assert len(opened()) == 1 and len(pod.records()) == before + 1, pod.records()


def test_redis_outage_is_a_503_to_the_sender_not_an_unhealthy_bridge(pod: Pod) -> None:
    """Redis stopped: webhooks get 503 (the sender retries), bridge_redis_up is 0 (BridgeRedisUnreachable
    fires), /healthz and the HEALTHCHECK stay healthy: as a sidecar, the pod stays Ready. Redis back: 202."""
    docker("stop", pod.redis)
    try:
        status, body = http("POST", f"{pod.bridge_url}/webhook/alertmanager", SAMPLE, TOKEN)
        assert status == 503, (status, body)
        assert http("GET", f"{pod.bridge_url}/healthz")[0] == 200
        assert http("GET", f"{pod.bridge_url}/readyz")[0] == 503
        # The shared gauges are refreshed in the background (BRIDGE_GAUGES_EVERY_S): 0 by the next refresh.
        wait_for(lambda: "\nbridge_redis_up 0.0" in http("GET", f"{pod.bridge_url}/metrics")[1], 30, what="redis_up 0")
        time.sleep(8)  # more than retries x interval of the test's health check (3 x 2 s)
        assert health(pod.bridge) == "healthy"
    finally:
        docker("start", pod.redis)
    wait_for(
        lambda: http("POST", f"{pod.bridge_url}/webhook/alertmanager", SAMPLE, TOKEN)[0] == 202,
        30,
        what=f"202 once Redis is back\n{pod.logs()}",
    )


# -- compose ------------------------------------------------------------------------------------------


def compose_command() -> list[str]:
    """Compose v2 (`docker compose`) where installed, else Debian's docker-compose 1.29."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if os.environ.get("CI"):
        pytest.fail("no compose (.ci/run installs Debian's docker-compose)")
    pytest.skip("no compose installed")


def test_compose_flow_opens_a_ticket_from_a_prometheus_rule(image: str) -> None:
    """compose up: Prometheus fires the example rule, Alertmanager groups it and posts it to the bridge, the
    bridge opens a ticket in the simulator. Ports are on 127.0.0.1; the admin API is off without a token."""
    project = f"atb{uuid.uuid4().hex[:8]}"
    ports = {name: free_port() for name in ("BRIDGE_PORT", "SNOW_PORT", "ALERTMANAGER_PORT", "PROMETHEUS_PORT")}
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}}
    env.pop("BRIDGE_ADMIN_TOKEN", None)
    base = [*compose_command(), "-p", project, "-f", str(COMPOSE_FILE)]

    def compose(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*base, *args], capture_output=True, text=True, env=env, timeout=300)
        assert not check or result.returncode == 0, f"{' '.join(args)}: {result.stdout}\n{result.stderr}"
        return result

    snow = f"http://127.0.0.1:{ports['SNOW_PORT']}"
    try:
        compose("up", "-d", "--no-build")

        def tickets() -> list[dict[str, str]]:
            status, body = http("GET", f"{snow}/_sim/records")
            rows = [row["record"] for row in body["incidents"]] if status == 200 else []
            return [r for r in rows if "DemoServiceUp" in r["short_description"]]

        wait_for(tickets, 150, interval=2, what="a ticket from the Prometheus rule")
        time.sleep(2)
        assert len(tickets()) == 1, (tickets(), compose("logs", "--tail", "30", check=False).stdout)
        bridge = f"http://127.0.0.1:{ports['BRIDGE_PORT']}"
        assert http("GET", f"{bridge}/api/v1/incidents")[0] == 403  # no demo token: the admin API is off
        for service, port in (("bridge", 8080), ("snow", 8081), ("alertmanager", 9093), ("prometheus", 9090)):
            published = compose("port", service, str(port)).stdout.strip()
            assert published.startswith("127.0.0.1:"), (service, published)
    finally:
        compose("down", "-v", "--remove-orphans", check=False)
