"""The engine: reads the intake stream, routes each alert, places it (topology, storm), checks
silences and runs the one atomic Lua step that decides and fills the incident's outbox; the
timers (hold-down, auto-resolve, flap quiet, flush) beside it.

May import `bridge.runtime` and `bridge.core`; not ingress, delivery or admin.
"""
