"""Adapters at the edges: source parsers (pure), desk clients, desk simulators."""
