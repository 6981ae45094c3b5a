"""Offline commands over the same code: explain (`bridge test-mapping`), replay, demo, schema.

May import everything below it; only the CLI imports it.
"""
