"""Adapters at the edges: source parsers (pure), desk clients, desk simulators.

Each source and desk is a plugin, registered through the entry points in `pyproject.toml` as a
third-party one would be (`bridge.core.plugins`). Adapters import only the contract in
`bridge.core` (models, errors, templates, the desk and source protocols), never the stages.
"""
