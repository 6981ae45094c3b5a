"""Delivery: applies each incident's outbox to its service desk, in order, from any replica:
the lease, the desk actions (open idempotently, note, reopen, resolve), the guards (shared rate
limit, circuit breaker, retries), field ownership, note text and the dead-letter stream.

May import `bridge.runtime` and `bridge.core`; not ingress, the engine or admin.
"""
