"""Per-source authentication through the ingress, with each source's own options bound at start-up."""

from __future__ import annotations

from typing import Any

from bridge.core.config import MappingConfig
from tests.conftest import Snow, fixture_bytes, post

SECRET = "change-me-shared-secret"  # the secret the recorded Grafana signature was made with
SIGNATURE = "258d62f9c3eff30ca21de4afa50eb6c9ee9ece828a4658dcdf46b059901c4fb8"


def grafana_mapping(snow: Snow, **options: Any) -> MappingConfig:
    return MappingConfig.model_validate(
        {
            "sources": {"grafana": {"kind": "grafana", "secret": SECRET, "options": options}},
            "desks": {"snow": {"kind": "servicenow", "url": snow.url, "user": "bridge", "password": "s3cret"}},
            "routes": [{"name": "all", "desk": "snow"}],
        }
    )


async def test_grafana_signature_accepted_and_forgery_refused(snow: Snow, make_bridge: Any) -> None:
    """The recorded Grafana HMAC signature is accepted; a tampered one is 401."""
    bridge = await make_bridge(grafana_mapping(snow))
    url = f"http://127.0.0.1:{bridge.port}/webhook/grafana"
    body = fixture_bytes("grafana_firing.json")
    status, answer = await post(url, body, **{"X-Grafana-Alerting-Signature": SIGNATURE})
    assert status == 202 and answer["accepted"] >= 1
    status, answer = await post(url, body, **{"X-Grafana-Alerting-Signature": "0" * 64})
    assert status == 401 and answer["error"] == "unauthorized"


async def test_grafana_require_signature_option_reaches_verify(snow: Snow, make_bridge: Any) -> None:
    """With `require_signature`, a bearer token alone no longer passes: the option is bound at start-up."""
    body = fixture_bytes("grafana_firing.json")
    lenient = await make_bridge(grafana_mapping(snow))
    strict = await make_bridge(grafana_mapping(snow, require_signature=True))
    bearer = {"Authorization": f"Bearer {SECRET}"}
    status, _ = await post(f"http://127.0.0.1:{lenient.port}/webhook/grafana", body, **bearer)
    assert status == 202
    status, answer = await post(f"http://127.0.0.1:{strict.port}/webhook/grafana", body, **bearer)
    assert status == 401 and "signature" in answer["detail"].lower()
