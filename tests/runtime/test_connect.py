"""Commands packed by hiredis (bridge/runtime/connect.py) are the very bytes redis-py's own packer makes;
a Redis URL is shown without its password."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection

from bridge.runtime.connect import _PackedByHiredis, without_password

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


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:s3cret@redis:6379/0", "redis://:***@redis:6379/0"),
        ("rediss://bridge:s3cret@redis:6380", "rediss://bridge:***@redis:6380"),
        ("redis+sentinel://:s3cret@s1:26379,s2:26379/main/1", "redis+sentinel://:***@s1:26379,s2:26379/main/1"),
        ("redis://bridge@redis:6379", "redis://bridge@redis:6379"),
    ],
)
def test_a_redis_url_is_shown_without_its_password(url: str, shown: str) -> None:
    """The URL in logs and /readyz keeps user, hosts and database, and shows *** for a password."""
    assert without_password(url) == shown
