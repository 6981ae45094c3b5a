"""The alert -> ticket bridge: ingress, engine, delivery and timers over Redis."""
