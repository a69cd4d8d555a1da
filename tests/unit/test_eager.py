"""Coroutines started in the caller's task, and a task of their own only from their first
real wait."""

from __future__ import annotations

import asyncio

import pytest

from ai_service.eager import started


async def test_a_coroutine_that_never_waits_is_done_at_once_with_no_task() -> None:
    tasks = len(asyncio.all_tasks())
    steps: list[str] = []

    async def settle(wait: bool) -> int:
        if wait:  # as a backend that writes to a server would
            await asyncio.sleep(0)
        steps.append("settled")
        return 42

    future = started(settle(wait=False))
    assert steps == ["settled"]  # before anything was awaited
    assert future.done() and future.result() == 42
    assert len(asyncio.all_tasks()) == tasks


async def test_a_coroutine_that_waits_runs_to_its_wait_at_once_then_goes_on_in_a_task() -> None:
    steps: list[str] = []
    go_on = asyncio.Event()

    async def settle() -> str:
        steps.append("before the wait")
        await go_on.wait()
        steps.append("after the wait")
        await asyncio.sleep(0)
        return "settled"

    future = started(settle())
    assert steps == ["before the wait"]
    assert not future.done()
    go_on.set()
    assert await future == "settled"
    assert steps == ["before the wait", "after the wait"]


async def test_an_error_before_any_wait_comes_back_from_the_future() -> None:
    async def settle() -> None:
        raise ValueError("the ledger refused")

    future = started(settle())
    with pytest.raises(ValueError, match="the ledger refused"):
        await future


async def test_a_task_cancelled_in_its_wait_is_cancelled_in_the_coroutine() -> None:
    seen: list[str] = []

    async def settle() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    future = started(settle())
    await asyncio.sleep(0)
    future.cancel()
    with pytest.raises(asyncio.CancelledError):
        await future
    assert seen == ["cancelled"]


async def test_shielded_it_goes_on_when_its_awaiter_is_cancelled() -> None:
    go_on = asyncio.Event()
    done: list[str] = []

    async def settle() -> None:
        await go_on.wait()
        done.append("settled")

    settling = started(settle())
    waiter = asyncio.ensure_future(asyncio.shield(settling))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    go_on.set()
    await settling
    assert done == ["settled"]
