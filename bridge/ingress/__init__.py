"""Ingress: the request path from a monitoring tool's webhook to a durable entry in the intake
stream, answered 202 only once it is in Redis. No template, no desk call, no lock.

May import `bridge.runtime` and `bridge.core`; not the engine, delivery or admin.
"""
