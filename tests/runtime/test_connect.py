"""Commands packed by hiredis (bridge/connect.py) are the very bytes redis-py's own packer makes."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection

from bridge.runtime.connect import _PackedByHiredis

ARGS = st.lists(
    st.one_of(st.text(), st.binary(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False)), max_size=12
)
NAMES = st.sampled_from(["EVALSHA", "XADD", "ZADD", "CLIENT KILL", "SCRIPT LOAD"])


@given(name=NAMES, args=ARGS)
def test_hiredis_packs_the_bytes_redis_py_packs(name: str, args: list[Any]) -> None:
    stock = Connection()  # redis-py's asyncio connection, packing in Python
    assert b"".join(_PackedByHiredis().pack_command(name, *args)) == b"".join(stock.pack_command(name, *args))


def test_a_memoryview_or_bytearray_argument_is_packed_as_bytes() -> None:
    ours = _PackedByHiredis().pack_command("SET", "k", memoryview(b"v1"), bytearray(b"v2"))
    assert b"".join(ours) == b"".join(Connection().pack_command("SET", "k", b"v1", b"v2"))
