"""The delivery's retry policy (`bridge.delivery.guard.retrying`): what is retried, how often, and that a
call that succeeds at once leaves nothing for the garbage collector."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from bridge.core.errors import DeskAuthExpired, DeskRejected, DeskTransient
from bridge.delivery.guard import IN_PASS_RETRY_AFTER_S, BreakerOpen, retrying


class Script:
    """A desk call that raises the given outcomes in turn, then answers "ok"; counts its calls."""

    def __init__(self, *outcomes: Exception) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.outcomes:
            raise self.outcomes.pop(0)
        return "ok"


def transient(retry_after: float | None = 0.0) -> DeskTransient:
    return DeskTransient("503 from the desk", retry_after=retry_after, desk="d", action="open")


@pytest.fixture
def no_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def test_a_call_that_succeeds_at_once_leaves_no_cyclic_garbage(no_collector: None) -> None:
    gc.collect()
    for _ in range(50):
        assert await retrying(Script(), 4) == "ok"
    # tenacity's retry state is objects in reference cycles: built for every call, 50 calls left
    # about 1,700 of them for the collector (the e2e load's pauses, bench/OPTIMISATIONS.md row 19)
    assert gc.collect() == 0


async def test_transient_failures_are_retried_until_the_call_succeeds() -> None:
    call = Script(transient(), transient())
    assert await retrying(call, 4) == "ok"
    assert call.calls == 3


async def test_transient_failures_stop_after_the_attempts_and_the_last_is_raised() -> None:
    last = transient()
    call = Script(transient(), transient(), last, transient())
    with pytest.raises(DeskTransient) as info:
        await retrying(call, 3)
    assert info.value is last
    assert call.calls == 3


async def test_one_attempt_only_is_one_call() -> None:
    call = Script(transient())
    with pytest.raises(DeskTransient):
        await retrying(call, 1)
    assert call.calls == 1


@pytest.mark.parametrize(
    "error",
    [
        DeskRejected("400 from the desk", desk="d", action="open"),
        BreakerOpen("breaker open", retry_after=1.0, desk="d", action="open"),
        transient(retry_after=IN_PASS_RETRY_AFTER_S + 1),  # a long Retry-After: the incident waits instead
    ],
    ids=["rejected", "breaker-open", "long-retry-after"],
)
async def test_what_is_not_retried_in_the_pass_is_raised_after_one_call(error: Exception) -> None:
    call = Script(error)
    with pytest.raises(type(error)) as info:
        await retrying(call, 4)
    assert info.value is error
    assert call.calls == 1


async def test_expired_credentials_are_retried_once_on_the_first_attempt_only() -> None:
    call = Script(DeskAuthExpired("401", desk="d", action="open"))
    assert await retrying(call, 4) == "ok"
    assert call.calls == 2

    again = Script(DeskAuthExpired("401", desk="d", action="open"), DeskAuthExpired("401", desk="d", action="open"))
    with pytest.raises(DeskAuthExpired):
        await retrying(again, 4)
    assert again.calls == 2

    late = Script(transient(), DeskAuthExpired("401", desk="d", action="open"))
    with pytest.raises(DeskAuthExpired):
        await retrying(late, 4)
    assert late.calls == 2
