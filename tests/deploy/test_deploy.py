"""deploy/: the Dockerfile, compose, Kubernetes, Helm, Prometheus and Grafana files pass their linters,
and the queries of the dashboard and the alert rules name metrics the bridge really exports."""

from __future__ import annotations

import asyncio
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
    """hadolint finds nothing in deploy/Dockerfile (non-root user, pinned base and packages, health check)."""
    result = run(tool("hadolint"), DEPLOY / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^USER 10001", text, re.M) and "HEALTHCHECK" in text
    assert all(":latest" not in line for line in text.splitlines() if line.startswith("FROM"))


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


def test_sidecar_pod_probes_and_shutdown_fit_together() -> None:
    """The sidecar has liveness and readiness probes and resources; the pod outlives the bridge's grace period."""
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "sidecar" / "alertmanager.yaml").read_text()))
    pod = next(d for d in docs if d["kind"] == "StatefulSet")["spec"]["template"]["spec"]
    bridge = next(c for c in pod["containers"] if c["name"] == "bridge")
    assert bridge["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert bridge["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert bridge["resources"]["requests"] and bridge["resources"]["limits"]
    grace = int(next(e["value"] for e in bridge["env"] if e["name"] == "BRIDGE_SHUTDOWN_GRACE_S"))
    assert pod["terminationGracePeriodSeconds"] > grace + 5
    config = yaml.safe_load(
        next(d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "sidecar" / "configmap.yaml").read_text())
             if d["metadata"]["name"] == "alertmanager-config")["data"]["alertmanager.yml"]
    )  # fmt: skip
    hook = config["receivers"][0]["webhook_configs"][0]
    assert hook["url"] == "http://127.0.0.1:8080/webhook/alertmanager" and hook["send_resolved"] is True


def test_kubernetes_mapping_configmap_is_a_valid_mapping(tmp_path: Path) -> None:
    """The mapping shipped in the ConfigMap loads with the bridge's own validator."""
    from bridge.core import config as config_mod

    docs = yaml.safe_load_all((DEPLOY / "kubernetes" / "sidecar" / "configmap.yaml").read_text())
    text = next(d for d in docs if d["metadata"]["name"] == "bridge-mappings")["data"]["mapping.yaml"]
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
    assert {k.group(1) for k in kinds if k} == {"Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget"}


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
    """The compose file runs bridge, Redis with AOF, Alertmanager, Prometheus and the simulator, wired together."""
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    services = compose["services"]
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
