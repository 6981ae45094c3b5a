"""The real Nagios fixtures of tests/e2e, for the nagios upstream's end-to-end test."""

from tests.e2e.test_nagios import nagios_binary, start_nagios  # noqa: F401 (fixtures)
