"""Coroutines started in the caller's task, given a task of their own only if they wait.

`asyncio.ensure_future(coroutine)` always makes a task, and the task first runs on a
later pass of the event loop, and its end wakes its awaiter on yet another pass. Work
that usually never waits (settling a call's tokens and spend in memory, once per call)
then pays a task and two loop passes for nothing. `started` runs the coroutine at once,
in the caller's task, up to its first real wait; only from there does it go on in a
task (Python 3.12's eager tasks, for 3.11).
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")


def started(coroutine: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """`coroutine`, run now up to its first wait: a finished future when it never waits,
    else a task that goes on from that wait."""
    future: asyncio.Future[T]
    try:
        waiting_on = coroutine.send(None)
    except StopIteration as stop:
        future = asyncio.get_running_loop().create_future()
        future.set_result(stop.value)
        return future
    except Exception as error:
        future = asyncio.get_running_loop().create_future()
        future.set_exception(error)
        return future
    return asyncio.ensure_future(_going_on(coroutine, waiting_on))


@types.coroutine
def _going_on(coroutine: Coroutine[Any, Any, T], waiting_on: Any) -> Generator[Any, None, T]:
    """The rest of a started coroutine, as a task's: what it waits on is handed to the
    task (as `await` does), and the task's wake-ups and cancellations handed back."""
    while True:
        try:
            yield waiting_on
        except BaseException as error:  # the task is cancelled: the coroutine sees it
            try:
                waiting_on = coroutine.throw(error)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            continue
        try:
            waiting_on = coroutine.send(None)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
