"""``core.eager.start``: a coroutine runs at once; a task carries it on only from its first wait."""

from __future__ import annotations

import asyncio

import pytest

from core import eager


async def test_a_coroutine_that_does_not_wait_finishes_at_once_without_a_task() -> None:
    done: list[str] = []

    async def work() -> None:
        done.append("ran")

    assert eager.start(work()) is None
    assert done == ["ran"]


async def test_an_exception_before_any_wait_reaches_the_caller() -> None:
    async def broken() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        eager.start(broken())


async def test_a_coroutine_that_waits_is_carried_on_by_a_task_with_each_result_and_error() -> None:
    loop = asyncio.get_running_loop()
    first: asyncio.Future[int] = loop.create_future()
    second: asyncio.Future[int] = loop.create_future()
    steps: list[object] = []

    async def work() -> str:
        steps.append("before")
        steps.append(await first)
        try:
            await second
        except KeyError as exc:
            steps.append(f"caught {exc}")
        await asyncio.sleep(0)  # a bare yield to the loop
        return "result"

    task = eager.start(work())
    assert task is not None
    assert steps == ["before"]
    first.set_result(7)
    await asyncio.sleep(0)
    second.set_exception(KeyError("k"))
    assert await task == "result"
    assert steps == ["before", 7, "caught 'k'"]


async def test_cancelling_the_task_cancels_what_the_coroutine_waits_on() -> None:
    loop = asyncio.get_running_loop()
    waited: asyncio.Future[None] = loop.create_future()
    cleaned: list[str] = []

    async def work() -> None:
        try:
            await waited
        finally:
            cleaned.append("finally")

    task = eager.start(work())
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert waited.cancelled()
    assert cleaned == ["finally"]


async def test_the_caller_goes_on_while_a_started_coroutine_waits() -> None:
    order: list[int] = []
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def deliver(n: int, wait: bool) -> None:
        if wait:
            await gate
        order.append(n)

    assert eager.start(deliver(1, False)) is None
    task = eager.start(deliver(2, True))
    order.append(3)  # the caller goes on while 2 waits
    gate.set_result(None)
    assert task is not None
    await task
    assert order == [1, 3, 2]
