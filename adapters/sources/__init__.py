"""Source adapters: one pure parser per monitoring tool, each module's `ADAPTER` (Nagios and
Icinga 2 share one module) registered by kind in `pyproject.toml`'s entry points."""
