"""Service-desk clients, each with its config model registered by kind in `pyproject.toml`'s entry points."""
