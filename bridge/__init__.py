"""The alert -> ticket bridge, in folders that follow an alert's flow.

    ingress/   POST /webhook/{source} -> auth -> parse -> XADD intake -> 202
    engine/    the intake consumer: route, place, silence, one atomic Lua step -> outbox; timers
    delivery/  each incident's outbox applied to its desk: lease, guards, retries, dead letters
    admin/     the admin API and its OpenAPI document, health, metrics, incidents, hot reload
    process/   one running bridge: server, workers, embedded Redis
    tools/     offline commands: explain (test-mapping), replay, demo, schema, starter (init, the packaged example)
    runtime/   what the stages share while running: Redis connection and batcher, Lua scripts and
               their wrappers, the outbox handoff, metrics, the Runtime
    core/      the contract and shared types: Alert, errors, keys, the Desk and source protocols,
               the plugin registry, templates, matchers, routing, the mapping's types

Arrows point down (cli -> tools -> process -> admin -> ingress | engine | delivery -> runtime -> core);
`pyproject.toml`'s import-linter contracts check it. `docs/architecture.md` draws the flow.
"""
