"""Service-desk clients. The registry is the discriminated union of desk configs in bridge.config."""
