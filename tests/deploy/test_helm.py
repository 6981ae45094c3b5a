"""The Helm chart, rendered and linted by Helm's own code (helm-python-sdk binds Helm's Go library: no helm
binary, no cluster, no network): `helm lint --strict` and `helm template` for several values sets, each
rendered set validated against the Kubernetes 1.30 schemas, strictly; `required` messages instead of
pods that crash-loop (a source without a secret, which the bridge refuses on 0.0.0.0, among them, unless
`allowUnauthenticated`); values.schema.json rejecting a wrong type."""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.deploy.test_deploy import CHART, run, tool

CREDENTIALS = {
    "ALERTMANAGER_TOKEN": "am-token",
    "SERVICENOW_URL": "https://example.service-now.com",
    "SERVICENOW_USER": "bridge",
    "SERVICENOW_PASSWORD": "secret",
}
PROD = """\
sources:
  grafana:
    kind: grafana
    secret: ${GRAFANA_TOKEN}
routes:
  - name: grafana
    sources: [grafana]
    desk: servicenow
    ticket:
      fields:
        short_description: "{{ name }} on {{ resource or 'unknown' }}"
"""

# name -> (release name, values)
VALUE_SETS: dict[str, tuple[str, dict[str, Any]]] = {
    "defaults": ("alert-ticket-bridge", {"credentials": CREDENTIALS}),
    "standalone": ("prod", {"mode": "standalone", "replicaCount": 3, "credentials": CREDENTIALS}),
    "existing-secret": ("alert-ticket-bridge", {"existingSecret": "bridge-credentials"}),
    "existing-secret-with-redis": ("atb", {"existingSecret": "bridge-credentials", "redisUrl": ""}),
    "extra-mappings": (
        "alert-ticket-bridge",
        {
            "credentials": {**CREDENTIALS, "GRAFANA_TOKEN": "g"},
            "extraMappings": [{"name": "prod.yaml", "content": PROD}],
        },
    ),
    "sidecar": ("monitoring", {"mode": "sidecar", "credentials": CREDENTIALS}),
    "allow-unauthenticated": (
        "alert-ticket-bridge",
        {"allowUnauthenticated": True, "credentials": {**CREDENTIALS, "ALERTMANAGER_TOKEN": ""}},
    ),
}
OPEN = "these sources would take alerts without a secret: "


@pytest.fixture(scope="module")
def helm() -> ModuleType:
    try:
        import helm_python
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("helm-python-sdk is not installed (the test extra has it)")
        pytest.skip("helm-python-sdk is not installed")
    return helm_python


def render(
    helm: ModuleType, values: dict[str, Any] | None, release: str = "alert-ticket-bridge"
) -> list[dict[str, Any]]:
    """`helm template`: the rendered objects (NOTES.txt and empty templates left out)."""
    with helm.Chart.load(CHART) as chart:
        out = chart.render(values, name=release, namespace="monitoring", is_install=True)
    texts = [text for name, text in sorted(out.items()) if not name.endswith("NOTES.txt")]
    return [doc for text in texts for doc in yaml.safe_load_all(text) if doc]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind}s"
    return found[0]


def pod_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] in ("Deployment", "StatefulSet"))["spec"]["template"]


def bridge_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod_of(docs)["spec"]["containers"]
    return next(c for c in containers if c["name"] == "bridge")


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_lint_strict_template_and_validate(helm: ModuleType, name: str, tmp_path: Path) -> None:
    """helm lint --strict finds nothing; helm template renders valid Kubernetes 1.30 objects (strict)."""
    release, values = VALUE_SETS[name]
    report = helm.lint(CHART, values, strict=True, namespace="monitoring", kube_version="v1.30.0")
    serious = [m for m in report["messages"] if m["severity"] >= 2]  # 1 is info ("icon is recommended")
    assert not serious and not report["errors"], report
    docs = render(helm, values, release)
    (tmp_path / "rendered.yaml").write_text(yaml.safe_dump_all(docs))
    result = run(tool("kubernetes-validate"), "-k", "1.30.0", "--strict", "--quiet", tmp_path / "rendered.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    pod = pod_of(docs)
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert "checksum/secret" in pod["metadata"]["annotations"]
    policy = one(docs, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()


@pytest.mark.parametrize(
    ("release", "fullname"), [("alert-ticket-bridge", "alert-ticket-bridge"), ("prod", "prod-alert-ticket-bridge")]
)
def test_names_do_not_double(helm: ModuleType, release: str, fullname: str) -> None:
    """A release named like the chart names its objects once (not alert-ticket-bridge-alert-ticket-bridge)."""
    docs = render(helm, {"credentials": CREDENTIALS}, release)
    assert one(docs, "Deployment")["metadata"]["name"] == fullname
    assert one(docs, "Service")["metadata"]["name"] == fullname


def test_existing_secret_keeps_the_redis_url(helm: ModuleType) -> None:
    """With existingSecret the chart renders no Secret, and the Redis URL still reaches the bridge (it used
    to live only in the chart's Secret: the pod crash-looped); redisUrl "" leaves it to the Secret."""
    docs = render(helm, VALUE_SETS["existing-secret"][1])
    assert not [d for d in docs if d["kind"] == "Secret"]
    bridge = bridge_of(docs)
    assert bridge["envFrom"] == [{"secretRef": {"name": "bridge-credentials"}}]
    assert {"name": "BRIDGE_REDIS_URL", "value": "redis://redis:6379/0"} in bridge["env"]
    bridge = bridge_of(render(helm, VALUE_SETS["existing-secret-with-redis"][1]))
    assert "BRIDGE_REDIS_URL" not in {e["name"] for e in bridge["env"]}


def test_a_cluster_url_and_its_shard_count_reach_the_bridge(helm: ModuleType) -> None:
    """redisUrl takes a `redis+cluster://` URL; redisShards, when set, becomes BRIDGE_SHARDS (left
    out at 0: the bridge's automatic count)."""
    url = "rediss+cluster://r1:6379,r2:6379"
    env = bridge_of(render(helm, {"credentials": CREDENTIALS, "redisUrl": url, "redisShards": 32}))["env"]
    assert {"name": "BRIDGE_REDIS_URL", "value": url} in env and {"name": "BRIDGE_SHARDS", "value": "32"} in env
    env = bridge_of(render(helm, {"credentials": CREDENTIALS, "redisUrl": url}))["env"]
    assert "BRIDGE_SHARDS" not in {e["name"] for e in env}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "credentials.SERVICENOW_URL is required: mapping mapping.yaml uses ${SERVICENOW_URL}"),
        ({"credentials": {**CREDENTIALS, "ALERTMANAGER_TOKEN": ""}}, OPEN + "alertmanager (in mapping.yaml)"),
        (
            {"credentials": {**CREDENTIALS, "SERVICENOW_URL": ""}},
            "credentials.SERVICENOW_URL is required: mapping mapping.yaml uses ${SERVICENOW_URL}",
        ),
        ({"credentials": CREDENTIALS, "redisUrl": ""}, "redisUrl is required"),
        (
            {"credentials": CREDENTIALS, "extraMappings": [{"name": "prod.yaml", "content": PROD}]},
            "credentials.GRAFANA_TOKEN is required: mapping prod.yaml uses ${GRAFANA_TOKEN}",
        ),
        (
            {"credentials": CREDENTIALS, "extraMappings": [{"name": "mapping.yaml", "content": PROD}]},
            "mapping.yaml is given twice",
        ),
        (
            {"mode": "sidecar", "credentials": {**CREDENTIALS, "ALERTMANAGER_TOKEN": ""}},
            "credentials.ALERTMANAGER_TOKEN is required",
        ),
    ],
)
def test_missing_values_fail_at_template_time(helm: ModuleType, values: dict[str, Any], message: str) -> None:
    """What would make the pod exit (an empty desk URL, no Redis) fails `helm template`, naming the value."""
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(helm, values)


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"replicaCount": "two"}, "/replicaCount"),
        ({"mappings": {"mapping.yaml": "sources: {}"}}, "/mappings"),  # the old map form
        ({"mode": "daemonset"}, "/mode"),
        ({"credentials": {"SERVICENOW_PASSWORD": 1234}}, "/credentials/SERVICENOW_PASSWORD"),
        ({"redisUrl": "redis:6379"}, "/redisUrl"),
        ({"allowUnauthenticated": "true"}, "/allowUnauthenticated"),  # a string would be true even as "false"
    ],
)
def test_values_schema_rejects_wrong_types(helm: ModuleType, values: dict[str, Any], where: str) -> None:
    """values.schema.json: helm template (and lint, install, upgrade) refuses a wrong type, naming the key."""
    with pytest.raises(helm.HelmValuesError, match=where):
        render(helm, {"credentials": CREDENTIALS, **values})
    report = helm.lint(CHART, {"credentials": CREDENTIALS, **values}, strict=True)
    assert any(where in error for error in report["errors"]), report


def test_mappings_replace_or_add_and_load_together(helm: ModuleType, tmp_path: Path) -> None:
    """`mappings` replaces the default file, `extraMappings` adds beside it; either way the files the bridge
    is given load together with its own validator (no "source 'alertmanager' defined twice")."""
    from bridge.core import config as config_mod

    env = {**CREDENTIALS, "GRAFANA_TOKEN": "g"}
    default = yaml.safe_load((CHART / "values.yaml").read_text())["mappings"][0]["content"]
    cases = {
        "add": ({"extraMappings": [{"name": "prod.yaml", "content": PROD}]}, ["mapping.yaml", "prod.yaml"]),
        "replace": ({"mappings": [{"name": "prod.yaml", "content": default}]}, ["prod.yaml"]),
    }
    for case, (values, files) in cases.items():
        docs = render(helm, {"credentials": env, **values})
        configmap = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-mappings"))
        assert sorted(configmap["data"]) == files, case
        assert [a for a in bridge_of(docs)["args"] if a.startswith("--config=")] == [
            f"--config=/etc/bridge/mappings/{f}" for f in files
        ]
        (tmp_path / case).mkdir()
        paths = [tmp_path / case / f for f in files]
        for path in paths:
            path.write_text(configmap["data"][path.name])
        routes = [r.name for r in config_mod.load(paths, env=env).routes]
        assert routes == (["prometheus", "grafana"] if case == "add" else ["prometheus"])


def test_a_changed_secret_rolls_the_pods(helm: ModuleType) -> None:
    """The pod template carries the Secret's checksum: a changed credential rolls the pods."""
    before = pod_of(render(helm, {"credentials": CREDENTIALS}))["metadata"]["annotations"]["checksum/secret"]
    changed = copy.deepcopy(CREDENTIALS) | {"SERVICENOW_PASSWORD": "rotated"}
    after = pod_of(render(helm, {"credentials": changed}))["metadata"]["annotations"]["checksum/secret"]
    assert before != after


def test_sidecar_mode_never_makes_alertmanager_unready_for_redis(helm: ModuleType) -> None:
    """mode: sidecar: the bridge's probes ask /healthz only; Alertmanager advertises its pod IP, finds its
    peers through a headless Service that publishes unready pods, and reads its token from the one Secret."""
    docs = render(helm, VALUE_SETS["sidecar"][1], "monitoring")
    statefulset = one(docs, "StatefulSet")
    pod = statefulset["spec"]["template"]["spec"]
    bridge = bridge_of(docs)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert bridge[probe]["httpGet"]["path"] == "/healthz", probe
    am = next(c for c in pod["containers"] if c["name"] == "alertmanager")
    name = statefulset["metadata"]["name"]
    assert "--cluster.advertise-address=$(POD_IP):9094" in am["args"]
    assert f"--cluster.peer={name}-1.{name}.monitoring.svc:9094" in am["args"]
    service = one(docs, "Service")
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    token = next(v for v in pod["volumes"] if v["name"] == "alertmanager-token")["secret"]
    assert token["secretName"] == one(docs, "Secret")["metadata"]["name"]
    assert token["items"] == [{"key": "ALERTMANAGER_TOKEN", "path": "alertmanager-token"}]
    config = yaml.safe_load(
        next(d for d in docs if d["metadata"]["name"].endswith("-alertmanager"))["data"]["alertmanager.yml"]
    )
    hook = config["receivers"][0]["webhook_configs"][0]
    assert hook["url"] == "http://127.0.0.1:8080/webhook/alertmanager"
    assert hook["http_config"]["authorization"]["credentials_file"] == "/etc/alertmanager/secrets/alertmanager-token"
    # standalone replicas leave the Service while their Redis is unreachable: that harms nothing else
    assert bridge_of(render(helm, {"credentials": CREDENTIALS}))["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_default_mapping_is_a_valid_mapping(helm: ModuleType, tmp_path: Path) -> None:
    """The chart's default mapping loads with the bridge's own validator."""
    from bridge.core import config as config_mod

    docs = render(helm, {"credentials": CREDENTIALS})
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    (tmp_path / "mapping.yaml").write_text(configmap["data"]["mapping.yaml"])
    assert config_mod.load([tmp_path / "mapping.yaml"], env=CREDENTIALS).routes[0].name == "prometheus"


def notes(helm: ModuleType, values: dict[str, Any]) -> str:
    """NOTES.txt as `helm install` prints it."""
    with helm.Chart.load(CHART) as chart:
        out = chart.render(values, name="alert-ticket-bridge", namespace="monitoring", is_install=True)
    return next(text for name, text in out.items() if name.endswith("NOTES.txt"))


def bridge_would_start(docs: list[dict[str, Any]], folder: Path, *, args: list[str] | None = None) -> None:
    """What the pod's bridge does first with the rendered mapping, Secret and args (or these `args`): load the
    mapping with the Secret's values as its environment, and refuse (ConfigError) a source without a secret
    on 0.0.0.0 unless --allow-unauthenticated is among the args."""
    from bridge.core import config as config_mod
    from bridge.process.server import refuse_open_sources

    configmap = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-mappings"))
    folder.mkdir()
    paths = []
    for name, text in configmap["data"].items():
        (folder / name).write_text(text)
        paths.append(folder / name)
    env = one(docs, "Secret").get("stringData") or {}
    args = bridge_of(docs)["args"] if args is None else args
    host = next(a.removeprefix("--host=") for a in args if a.startswith("--host="))
    config = config_mod.load(paths, env=env)
    refuse_open_sources(config, host, allow_unauthenticated="--allow-unauthenticated" in args)


def test_a_source_without_a_secret_fails_the_render_unless_allow_unauthenticated(
    helm: ModuleType, tmp_path: Path
) -> None:
    """No token and no existingSecret: `helm template` fails naming the source and the way out, rather than
    render a pod whose bridge refuses to start on 0.0.0.0. With the token it renders a bridge that starts;
    with allowUnauthenticated: true one that passes --allow-unauthenticated, and starts (NOTES warn)."""
    from bridge.core.errors import ConfigError

    no_token = {**CREDENTIALS, "ALERTMANAGER_TOKEN": ""}
    with pytest.raises(helm.HelmRenderError) as refused:
        render(helm, {"credentials": no_token})
    said = str(refused.value)
    assert OPEN + "alertmanager (in mapping.yaml)" in said, said
    assert "allowUnauthenticated: true" in said and "--allow-unauthenticated" in said and "existingSecret" in said

    docs = render(helm, {"credentials": CREDENTIALS})
    assert "--allow-unauthenticated" not in bridge_of(docs)["args"]
    bridge_would_start(docs, tmp_path / "token")
    assert "WARNING" not in notes(helm, {"credentials": CREDENTIALS})

    allowed = {"credentials": no_token, "allowUnauthenticated": True}
    docs = render(helm, allowed)
    assert "--allow-unauthenticated" in bridge_of(docs)["args"]
    bridge_would_start(docs, tmp_path / "allowed")
    assert "WARNING: allowUnauthenticated is true (--allow-unauthenticated): alertmanager (in mapping.yaml)" in notes(
        helm, allowed
    )
    # what the chart refuses is what the bridge refuses: that pod without the flag would not start
    args = [a for a in bridge_of(docs)["args"] if a != "--allow-unauthenticated"]
    with pytest.raises(ConfigError, match="alertmanager"):
        bridge_would_start(docs, tmp_path / "not-allowed", args=args)


SOURCE_MAPPING = """\
sources:
  tool:
    kind: generic
    {secret}
    options: {{name: check}}
desks:
  servicenow:
    kind: servicenow
    url: https://example.service-now.com
    user: bridge
    password: ${{SERVICENOW_PASSWORD}}
routes:
  - name: tool
    desk: servicenow
"""


@pytest.mark.parametrize(
    ("secret", "values", "is_open"),
    [
        ("", {}, True),  # no secret at all
        ('secret: ""', {}, True),
        ("secret: ${TOOL_TOKEN:-}", {}, True),
        ("secret: ${TOOL_TOKEN:-}", {"credentials": {"SERVICENOW_PASSWORD": "p", "TOOL_TOKEN": "t"}}, False),
        ("secret: ${TOOL_TOKEN:-}", {"existingSecret": "mine"}, False),  # the chart cannot read it
        ("secret: ${TOOL_TOKEN:-fallback}", {}, False),
        ("secret: ${TOOL_TOKEN}", {"credentials": {"SERVICENOW_PASSWORD": "p", "TOOL_TOKEN": "t"}}, False),
        ("secret_file: /run/secrets/tool", {}, False),
        ("", {"allowUnauthenticated": True}, False),
    ],
)
def test_which_sources_count_as_open(helm: ModuleType, secret: str, values: dict[str, Any], is_open: bool) -> None:
    """A source is open with no secret, an empty one, or `${VAR:-}` that neither credentials nor existingSecret
    can fill; a default, a file, a given VAR or allowUnauthenticated lets the chart render."""
    content = SOURCE_MAPPING.format(secret=secret)
    given = {"credentials": {"SERVICENOW_PASSWORD": "p"}, "mappings": [{"name": "tool.yaml", "content": content}]}
    given |= values
    if is_open:
        with pytest.raises(helm.HelmRenderError, match=r"without a secret: tool \(in tool.yaml\)"):
            render(helm, given)
    else:
        assert bridge_of(render(helm, given))["args"][:3] == ["serve", "--host=0.0.0.0", "--port=8080"]
