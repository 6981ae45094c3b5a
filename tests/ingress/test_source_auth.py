"""Per-source authentication through the ingress, with each source's own options bound at start-up."""

from __future__ import annotations

import hashlib
import hmac
import time
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
    """The recorded Grafana HMAC signature is accepted (timestamps not required); a tampered one is 401."""
    bridge = await make_bridge(grafana_mapping(snow, require_timestamp=False))
    url = f"http://127.0.0.1:{bridge.port}/webhook/grafana"
    body = fixture_bytes("grafana_firing.json")
    status, answer = await post(url, body, **{"X-Grafana-Alerting-Signature": SIGNATURE})
    assert status == 202 and answer["accepted"] >= 1
    status, answer = await post(url, body, **{"X-Grafana-Alerting-Signature": "0" * 64})
    assert status == 401 and answer["error"] == "unauthorized"


async def test_grafana_require_signature_option_reaches_verify(snow: Snow, make_bridge: Any) -> None:
    """By default a bearer token alone does not pass; with `require_signature: false` it does (bound at start-up)."""
    body = fixture_bytes("grafana_firing.json")
    lenient = await make_bridge(grafana_mapping(snow, require_signature=False, require_timestamp=False))
    strict = await make_bridge(grafana_mapping(snow))
    bearer = {"Authorization": f"Bearer {SECRET}"}
    status, _ = await post(f"http://127.0.0.1:{lenient.port}/webhook/grafana", body, **bearer)
    assert status == 202
    status, answer = await post(f"http://127.0.0.1:{strict.port}/webhook/grafana", body, **bearer)
    assert status == 401 and "signature" in answer["detail"].lower()


async def test_a_signed_grafana_request_is_accepted_once_by_any_replica(snow: Snow, make_bridge: Any) -> None:
    """A timestamped signature passes once; the same request again, to the same or another replica, is 401."""
    body = fixture_bytes("grafana_firing.json")
    stamp = str(int(time.time()))
    signature = hmac.new(SECRET.encode(), stamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    signed = {"X-Grafana-Alerting-Timestamp": stamp, "X-Grafana-Alerting-Signature": signature}
    one, two = await make_bridge(grafana_mapping(snow)), await make_bridge(grafana_mapping(snow))
    status, answer = await post(f"http://127.0.0.1:{one.port}/webhook/grafana", body, **signed)
    assert status == 202, answer
    for replica in (one, two):
        status, answer = await post(f"http://127.0.0.1:{replica.port}/webhook/grafana", body, **signed)
        assert (status, answer["error"]) == (401, "unauthorized") and "replay" in answer["detail"], answer
    status, answer = await post(f"http://127.0.0.1:{two.port}/webhook/grafana", body)
    assert status == 401 and "missing X-Grafana-Alerting-Signature" in answer["detail"], answer
