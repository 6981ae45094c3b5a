"""The core: the contract with adapters and the types every stage shares.

The normalised `Alert`, the error tree, the Desk and source protocols, the plugin registry that
finds adapters through entry points, the Redis key schema, templates, matchers, routing and the
mapping's own types. Imports nothing else of `bridge` and no adapter: everything imports it.
"""
