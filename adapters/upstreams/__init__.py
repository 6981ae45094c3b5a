"""Upstream plugins of the loop back: acknowledgements in the monitoring tools (bridge.core.sync.Upstream),
each a settings model registered by the source kind it answers in `pyproject.toml`'s entry points
(`alert_ticket_bridge.upstreams`). They import only bridge.core (and the desks' HTTP transport)."""
