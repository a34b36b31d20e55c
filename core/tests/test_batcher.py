"""``core.batcher``: calls arriving together share a batch; each gets its own answer."""

from __future__ import annotations

import asyncio

import pytest

from core import batcher


async def test_calls_arriving_together_share_a_batch_and_each_gets_its_own_answer() -> None:
    batches: list[list[int]] = []

    async def double(items: list[int]) -> list[int | BaseException]:
        batches.append(list(items))
        await asyncio.sleep(0.01)
        return [ValueError(f"odd {i}") if i % 2 else i * 2 for i in items]

    b = batcher.LoopBatcher(double)
    results = await asyncio.gather(*(b.submit(i) for i in range(10)), return_exceptions=True)
    assert [r if isinstance(r, int) else str(r) for r in results] == [
        0, "odd 1", 4, "odd 3", 8, "odd 5", 12, "odd 7", 16, "odd 9"
    ]  # fmt: skip
    assert batches == [list(range(10))]  # submitted in one loop turn: one batch
    first = asyncio.ensure_future(b.submit(20))
    await asyncio.sleep(0.001)  # its batch is running: the next ones wait for the one after
    later = await asyncio.gather(*(b.submit(i) for i in (22, 24)))
    assert (await first, later) == (40, [44, 48])
    assert batches[1:] == [[20], [22, 24]]


async def test_a_failed_batch_fails_each_of_its_callers_and_the_next_batch_runs() -> None:
    calls = 0

    async def flaky(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("redis away")
        return items

    b = batcher.LoopBatcher(flaky)
    with pytest.raises(ConnectionError):
        await b.submit(1)
    assert await b.submit(2) == 2


async def test_an_answer_of_the_wrong_length_is_an_error_for_every_caller() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    b = batcher.LoopBatcher(short)
    results = await asyncio.gather(b.submit(1), b.submit(2), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)


async def test_a_cancelled_caller_does_not_stop_the_others() -> None:
    release = asyncio.Event()

    async def slow(items: list[int]) -> list[int]:
        await release.wait()
        return items

    b = batcher.LoopBatcher(slow)
    first = asyncio.ensure_future(b.submit(1))
    await asyncio.sleep(0)
    waiting = [asyncio.ensure_future(b.submit(i)) for i in (2, 3)]
    await asyncio.sleep(0)
    waiting[0].cancel()
    release.set()
    assert await first == 1
    assert await waiting[1] == 3
    assert waiting[0].cancelled()


async def test_a_thread_batch_runs_in_a_worker_thread_per_batch() -> None:
    import threading

    threads: list[str] = []

    def work(items: list[int]) -> list[int]:
        threads.append(threading.current_thread().name)
        return [i + 1 for i in items]

    b = batcher.for_loop(work)
    assert batcher.for_loop(work) is b  # one per loop and function
    assert await asyncio.gather(*(b.submit(i) for i in range(50))) == list(range(1, 51))
    assert threading.main_thread().name not in threads
    assert b.batches == len(threads) < 50
