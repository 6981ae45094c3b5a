"""The shards of the intake stream, the ready queue and the timers (bridge.core.keys.Shards)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from bridge.core import keys


def test_one_shard_is_the_keys_as_they_always_were() -> None:
    one = keys.Shards(1)
    assert (one.intakes, one.readies, one.timers) == ((keys.INTAKE,), (keys.READY,), (keys.TIMERS,))
    assert one.intake_for("anything") == keys.INTAKE and one.ready_for("r:abc") == keys.READY


@pytest.mark.parametrize("masters", [2, 3, 4])
def test_sixteen_shards_spread_evenly_over_masters_of_even_slot_ranges(masters: int) -> None:
    """Each shard's three keys share one slot, the shards' slots are all different, and masters holding
    even ranges of slots (as `redis-cli --cluster create` splits them) hold 16 / masters shards each,
    give or take one."""
    shards = keys.Shards(keys.CLUSTER_SHARDS)
    slots = [key_slot(k.encode()) for k in shards.intakes]
    assert len(set(slots)) == keys.CLUSTER_SHARDS
    for family in (shards.readies, shards.timers):
        assert [key_slot(k.encode()) for k in family] == slots
    width = REDIS_CLUSTER_HASH_SLOTS / masters
    held = [sum(1 for s in slots if m * width <= s < (m + 1) * width) for m in range(masters)]
    assert max(held) - min(held) <= 1 and sum(held) == keys.CLUSTER_SHARDS


def test_many_identities_spread_over_three_masters_as_their_shards_do() -> None:
    """10,000 alert identities (hex digests, as the sources make them) over the 16 shards of a cluster
    whose three masters hold even slot ranges: the masters hold 5, 6 and 5 shards, and each gets that
    share of the identities (31 %, 38 %, 31 %), give or take 2 %."""
    shards = keys.Shards(keys.CLUSTER_SHARDS)
    third = REDIS_CLUSTER_HASH_SLOTS / 3
    master = [int(key_slot(k.encode()) // third) for k in shards.intakes]
    assert sorted(master.count(m) for m in range(3)) == [5, 5, 6]
    held = [0, 0, 0]
    for i in range(10_000):
        held[master[shards.of(hashlib.sha256(str(i).encode()).hexdigest()[:16])]] += 1
    assert all(abs(n / 10_000 - master.count(m) / 16) < 0.02 for m, n in enumerate(held)), held


@given(st.text(min_size=1, max_size=80), st.integers(min_value=1, max_value=64))
def test_a_name_always_has_the_same_shard_among_those_there_are(name: str, count: int) -> None:
    shards = keys.Shards(count)
    assert 0 <= shards.of(name) < count and shards.of(name) == keys.Shards(count).of(name)
    member = keys.timer_member(name.replace("|", "/"), "hold", 5)
    assert shards.timers_for(member) == shards.timers[shards.of(name.replace("|", "/"))]


def test_marks_and_timers_are_split_by_shard() -> None:
    shards = keys.Shards(4)
    ready = {f"r:{i}": i for i in range(40)}
    split = shards.by_ready(ready)
    assert len(split) > 1 and sum(len(v) for v in split.values()) == 40
    assert all(shards.ready_for(base) == zset for zset, marks in split.items() for base in marks)
    timers = {keys.timer_member(base, "hold", at): at for base, at in ready.items()}
    assert {z.replace(keys.TIMERS, "") for z in shards.by_timers(timers)} == {z.replace(keys.READY, "") for z in split}


@pytest.mark.parametrize("count", [0, 257])
def test_a_count_out_of_bounds_is_refused(count: int) -> None:
    with pytest.raises(ValueError, match="BRIDGE_SHARDS"):
        keys.Shards(count)
