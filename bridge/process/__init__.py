"""One running bridge: the HTTP app assembled from ingress and admin, the server that starts and
stops every stage whole, `--workers N`, and the embedded Redis for a machine without one.

May import admin, the stages, `bridge.runtime` and `bridge.core`; not `bridge.tools` or the CLI.
"""
