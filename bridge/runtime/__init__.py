"""What the stages of a running bridge share: the Redis connection and its batched round trips,
the Lua scripts (one per file in `lua/`) with their typed wrappers, the outbox that hands work
from the engine to delivery, the process's metrics, and the `Runtime` that holds them.

May import `bridge.core` only.
"""
