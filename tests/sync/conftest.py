"""Fixtures of the loop back's tests: the real Alertmanager, as the end-to-end tests start it."""

from tests.e2e.test_alertmanager import alertmanager_binary, start_alertmanager

__all__ = ["alertmanager_binary", "start_alertmanager"]
