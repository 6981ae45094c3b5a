"""deploy/: the Dockerfile, compose, Kubernetes, Helm, Prometheus and Grafana files pass their linters,
and the queries of the dashboard and the alert rules name metrics the bridge really exports.
(test_helm.py renders the chart with Helm's own code; test_containers.py runs the images.)"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.amp import alert, group
from tests.conftest import Snow, eventually, mapping, post, require
from tests.running import ROOT, base_url, scrape, webhook_url

DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "alert-ticket-bridge"


def tool(name: str) -> str:
    """A linter from the test extra (pip) or Debian: skipped when absent, a failure under CI=1."""
    found = shutil.which(name)
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail(f"{name} is not installed")
    pytest.skip(f"{name} is not installed")


def run(*command: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, cwd=cwd)


def test_dockerfile_passes_hadolint() -> None:
    """hadolint finds nothing in deploy/Dockerfile nor in the stand-ins' (non-root, pinned base, health check)."""
    result = run(tool("hadolint"), DEPLOY / "Dockerfile", *sorted((DEPLOY / "ci").glob("*.Dockerfile")))
    assert result.returncode == 0, result.stdout + result.stderr
    text = (DEPLOY / "Dockerfile").read_text()
    assert "HEALTHCHECK" in text
    assert all(":latest" not in line for line in text.splitlines() if line.startswith(("FROM", "ARG")))


def test_dockerfile_defects_stay_fixed() -> None:
    """The base is a build argument; the user's group exists (gid 10001); nothing is copied in and deleted
    later; the health check names no port; the grace period fits docker's default 10 s stop timeout."""
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm$", text, re.M)
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert re.search(r"groupadd [^\n]*--gid 10001", text) and re.search(r"useradd [^\n]*--gid 10001", text)
    assert "rm -rf /wheels" not in text and "COPY --from=build /opt/bridge /opt/bridge" in text
    healthcheck = re.search(r"^HEALTHCHECK .*\n\s+CMD .*$", text, re.M).group(0)  # type: ignore[union-attr]
    assert "8080" not in healthcheck and "healthcheck.py" in healthcheck
    grace = int(re.search(r"^\s+BRIDGE_SHUTDOWN_GRACE_S=(\d+)", text, re.M).group(1))  # type: ignore[union-attr]
    assert grace <= 8, "docker stop waits 10 s before SIGKILL: the grace period must end before"


def test_dockerignore_keeps_the_context_to_what_the_image_copies() -> None:
    """.dockerignore ignores everything but the files the Dockerfile copies (no .git, venvs, .bridge-data)."""
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    text = (DEPLOY / "Dockerfile").read_text()
    copied = {src for m in re.finditer(r"^COPY (?!--from)(.+) \S+$", text, re.M) for src in m.group(1).split()}
    assert copied and copied <= allowed, f"copied but ignored: {sorted(copied - allowed)}"


def _healthcheck() -> Any:
    spec = importlib.util.spec_from_file_location("healthcheck", DEPLOY / "healthcheck.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("cmdline", "url", "strict"),
    [
        ("bridge serve --host 0.0.0.0 --port 8080", "http://127.0.0.1:8080/healthz", True),
        ("python /opt/bridge/bin/bridge serve --port=9100", "http://127.0.0.1:9100/healthz", True),
        ("bridge serve --host :: --port 9000", "http://[::1]:9000/healthz", True),
        ("bridge serve", "http://127.0.0.1:8080/healthz", True),
        ("bridge simulate servicenow --host 0.0.0.0", "http://127.0.0.1:8081/", False),
        ("docker-init -- bridge simulate jira --port 8082", "http://127.0.0.1:8082/", False),
    ],
)
def test_healthcheck_asks_the_port_the_command_was_given(cmdline: str, url: str, strict: bool) -> None:
    """deploy/healthcheck.py reads the container's command line: any --port (and `simulate`) is checked."""
    assert _healthcheck().target(cmdline.split()) == (url, strict)


def test_yaml_files_pass_yamllint() -> None:
    """Every YAML file in deploy/, mappings/ and bridge/samples/ passes yamllint (Helm templates excepted)."""
    result = run(tool("yamllint"), "-s", "-c", DEPLOY / ".yamllint", "deploy", "mappings", "bridge/samples")
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_manifests_validate_against_the_api_schemas() -> None:
    """The sidecar and standalone manifests are valid Kubernetes 1.30 objects, strictly (no unknown field)."""
    files = sorted((DEPLOY / "kubernetes").rglob("*.yaml"))
    result = run(tool("kubernetes-validate"), "-k", "1.30.0", "--strict", "--quiet", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = {doc["kind"] for f in files for doc in yaml.safe_load_all(f.read_text()) if doc}
    assert {"StatefulSet", "Deployment", "ConfigMap", "Secret", "PodDisruptionBudget", "Service"} <= kinds
    assert "NetworkPolicy" in kinds


def _docs(folder: str) -> list[dict[str, Any]]:
    files = sorted((DEPLOY / "kubernetes" / folder).glob("*.yaml"))
    return [d for f in files for d in yaml.safe_load_all(f.read_text()) if d]


def _references(pod: dict[str, Any]) -> set[tuple[str, str]]:
    """The ConfigMaps and Secrets a pod spec reads (volumes, envFrom, env valueFrom)."""
    refs: set[tuple[str, str]] = set()
    for volume in pod.get("volumes", []):
        if "configMap" in volume:
            refs.add(("ConfigMap", volume["configMap"]["name"]))
        if "secret" in volume:
            refs.add(("Secret", volume["secret"]["secretName"]))
    for container in pod["containers"]:
        for source in container.get("envFrom", []):
            refs |= {("ConfigMap", source["configMapRef"]["name"])} if "configMapRef" in source else set()
            refs |= {("Secret", source["secretRef"]["name"])} if "secretRef" in source else set()
        for env in container.get("env", []):
            ref = env.get("valueFrom", {})
            refs |= {("Secret", ref["secretKeyRef"]["name"])} if "secretKeyRef" in ref else set()
    return refs


@pytest.mark.parametrize("folder", ["sidecar", "standalone"])
def test_each_kubernetes_folder_stands_alone(folder: str) -> None:
    """Each folder defines every ConfigMap and Secret its pods read, a NetworkPolicy selecting its pods, and
    mounts no service-account token (the bridge never talks to the Kubernetes API)."""
    docs = _docs(folder)
    defined = {(d["kind"], d["metadata"]["name"]) for d in docs}
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    assert workloads
    for workload in workloads:
        pod = workload["spec"]["template"]
        assert pod["spec"]["automountServiceAccountToken"] is False
        assert _references(pod["spec"]) <= defined, f"read but defined elsewhere: {_references(pod['spec']) - defined}"
        policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
        assert any(
            p["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items() for p in policies
        ), f"no NetworkPolicy selects {workload['metadata']['name']}"


def test_sidecar_pod_probes_and_shutdown_fit_together() -> None:
    """The bridge's probes never ask Redis (/healthz, not /readyz: an unready pod would leave Alertmanager's
    peer Service); it has resources; the pod outlives the bridge's grace period."""
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "sidecar" / "alertmanager.yaml").read_text()))
    pod = next(d for d in docs if d["kind"] == "StatefulSet")["spec"]["template"]["spec"]
    bridge = next(c for c in pod["containers"] if c["name"] == "bridge")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert bridge[probe]["httpGet"]["path"] == "/healthz", probe
    assert bridge["resources"]["requests"] and bridge["resources"]["limits"]
    grace = int(next(e["value"] for e in bridge["env"] if e["name"] == "BRIDGE_SHUTDOWN_GRACE_S"))
    assert pod["terminationGracePeriodSeconds"] > grace + 5
    config = yaml.safe_load(
        next(d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "sidecar" / "configmap.yaml").read_text())
             if d["metadata"]["name"] == "alertmanager-config")["data"]["alertmanager.yml"]
    )  # fmt: skip
    hook = config["receivers"][0]["webhook_configs"][0]
    assert hook["url"] == "http://127.0.0.1:8080/webhook/alertmanager" and hook["send_resolved"] is True


def test_sidecar_alertmanager_clusters_anywhere_with_one_token() -> None:
    """Alertmanager advertises its pod IP (any range), its peers find each other through a headless Service
    that publishes unready pods too, and its bearer token is a key of the bridge's one Secret."""
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "sidecar" / "alertmanager.yaml").read_text()))
    pod = next(d for d in docs if d["kind"] == "StatefulSet")["spec"]["template"]["spec"]
    am = next(c for c in pod["containers"] if c["name"] == "alertmanager")
    assert "--cluster.advertise-address=$(POD_IP):9094" in am["args"]
    assert {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in am["env"]
    service = next(d for d in docs if d["kind"] == "Service")
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    token = next(v for v in pod["volumes"] if v["name"] == "alertmanager-token")["secret"]
    bridge = next(c for c in pod["containers"] if c["name"] == "bridge")
    assert token["secretName"] == bridge["envFrom"][0]["secretRef"]["name"]
    assert token["items"] == [{"key": "ALERTMANAGER_TOKEN", "path": "alertmanager-token"}]
    secrets = [d for d in _docs("sidecar") if d["kind"] == "Secret"]
    assert len(secrets) == 1 and "ALERTMANAGER_TOKEN" in secrets[0]["stringData"]


@pytest.mark.parametrize("folder", ["sidecar", "standalone"])
def test_kubernetes_mapping_configmap_is_a_valid_mapping(tmp_path: Path, folder: str) -> None:
    """The mapping shipped in each folder's ConfigMap loads with the bridge's own validator."""
    from bridge.core import config as config_mod

    docs = yaml.safe_load_all((DEPLOY / "kubernetes" / folder / "configmap.yaml").read_text())
    text = next(d for d in docs if d["metadata"]["name"].endswith("mappings"))["data"]["mapping.yaml"]
    (tmp_path / "mapping.yaml").write_text(text)
    env = {"ALERTMANAGER_TOKEN": "t", "SERVICENOW_URL": "https://x.service-now.com", "SERVICENOW_USER": "u",
           "SERVICENOW_PASSWORD": "p"}  # fmt: skip
    assert config_mod.load([tmp_path / "mapping.yaml"], env=env).routes[0].name == "prometheus"


def test_helm_chart_is_complete_and_every_value_it_uses_exists() -> None:
    """Chart.yaml is a v2 chart and every `.Values.x.y` its templates read is defined in values.yaml."""
    # `helm lint` is not installable here; this is the part of it that needs no Go templating.
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "alert-ticket-bridge" and chart["version"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    used: set[str] = set()
    for template in (CHART / "templates").iterdir():
        used |= set(re.findall(r"\.Values\.([A-Za-z0-9_.]+)", template.read_text()))
    assert used, "the templates read no values"
    for dotted in used:
        node: Any = values
        for part in dotted.split("."):
            assert isinstance(node, dict) and part in node, f".Values.{dotted} is not in values.yaml"
            node = node[part]
    kinds = {re.search(r"^kind: (\w+)", t.read_text(), re.M) for t in (CHART / "templates").glob("*.yaml")}
    assert {k.group(1) for k in kinds if k} == {
        "Deployment", "StatefulSet", "Service", "ConfigMap", "Secret", "PodDisruptionBudget", "NetworkPolicy"
    }  # fmt: skip


def test_prometheus_config_and_rules_pass_promtool(tmp_path: Path) -> None:
    """promtool checks the compose Prometheus config with its rule files, as mounted in the container."""
    promtool = require("promtool")
    for name in ("prometheus.yml", "example.rules.yml"):
        shutil.copy(DEPLOY / "compose" / name, tmp_path / name)
    shutil.copy(DEPLOY / "prometheus" / "bridge.rules.yml", tmp_path / "bridge.rules.yml")
    result = run(promtool, "check", "config", tmp_path / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    result = run(promtool, "check", "rules", tmp_path / "bridge.rules.yml", tmp_path / "example.rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_configs_pass_amtool(tmp_path: Path) -> None:
    """amtool accepts the compose receiver and the one in the sidecar ConfigMap."""
    amtool = require("amtool")
    docs = yaml.safe_load_all((DEPLOY / "kubernetes" / "sidecar" / "configmap.yaml").read_text())
    sidecar = next(d for d in docs if d["metadata"]["name"] == "alertmanager-config")["data"]["alertmanager.yml"]
    (tmp_path / "sidecar.yml").write_text(sidecar)
    for path in (DEPLOY / "compose" / "alertmanager.yml", tmp_path / "sidecar.yml"):
        result = run(amtool, "check-config", path)
        assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_wires_the_whole_flow() -> None:
    """The compose file runs bridge, Redis with AOF, Alertmanager, Prometheus and the simulator, wired together;
    it publishes ports on loopback only, holds no admin token, and has no top-level `name:` (compose 1.29)."""
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    assert set(compose) <= {"services", "volumes", "networks", "x-bridge-image"}
    services = compose["services"]
    published = [port for s in services.values() for port in s.get("ports", [])]
    assert published and all(port.startswith("127.0.0.1:") for port in published), published
    assert services["bridge"]["environment"]["BRIDGE_ADMIN_TOKEN"].startswith("${")
    assert {"bridge", "redis", "alertmanager", "prometheus", "snow"} <= set(services)
    assert "--appendonly" in services["redis"]["command"] and "yes" in services["redis"]["command"]
    env = services["bridge"]["environment"]
    assert env["BRIDGE_REDIS_URL"].startswith("redis://redis:") and env["SERVICENOW_URL"] == "http://snow:8081"
    am = yaml.safe_load((DEPLOY / "compose" / "alertmanager.yml").read_text())
    assert am["receivers"][0]["webhook_configs"][0]["url"] == "http://bridge:8080/webhook/alertmanager"
    token = (DEPLOY / "compose" / "bridge.token").read_text().strip()
    assert token == env["ALERTMANAGER_TOKEN"]


async def test_dashboard_and_rules_query_metrics_the_bridge_exports(snow: Snow, make_bridge: Any) -> None:
    """Every bridge_* series named in the Grafana dashboard and the alert rules appears in a real scrape."""
    bridge = await make_bridge(mapping(snow.url))
    snow.faults.set(rate_limit=1, retry_after=1)
    await post(webhook_url(bridge), group(alert()))
    await eventually(lambda: snow.incidents(), within=10)
    await asyncio.sleep(0.2)
    text, _ = await scrape(base_url(bridge))
    exported = set(re.findall(r"^(bridge_\w+)", text, re.M))
    dashboard = orjson.loads((DEPLOY / "grafana" / "bridge-dashboard.json").read_bytes())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "bridge.rules.yml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    named = {name for e in exprs for name in re.findall(r"\b(bridge_\w+)", e)}
    assert len(named) >= 12
    assert named <= exported, f"not exported: {sorted(named - exported)}"
