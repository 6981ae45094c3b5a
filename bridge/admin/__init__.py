"""Administration of a running bridge: the admin API under /api/v1 and its OpenAPI document,
health and readiness, the Prometheus endpoint, reading and resolving incidents, hot reload, and the
status page at /ui (`ui/`), which renders what the API answers.

May import the stages (engine, delivery, ingress), `bridge.runtime` and `bridge.core`.
"""
