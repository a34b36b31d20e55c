"""The local-first channel layer on the real Redis: local delivery, cross-process delivery
through pub/sub, no echo duplicates, order, exclude_channel, pipelined batches."""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import pytest
from django.conf import settings

from core.channel_layer import LocalFirstChannelLayer


def _layer() -> LocalFirstChannelLayer:
    config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
    return LocalFirstChannelLayer(hosts=config["hosts"], prefix=f"{config['prefix']}-layer-{os.getpid()}")


async def _drain(layer: Any, channel: str, count: int, timeout: float = 3.0) -> list[dict[str, Any]]:
    return [await asyncio.wait_for(layer.receive(channel), timeout) for _ in range(count)]


async def _nothing_more(layer: Any, channel: str) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(layer.receive(channel), 0.3)


async def test_local_and_remote_members_each_get_every_event_once_in_order() -> None:
    here, there = _layer(), _layer()  # two processes' layers (two origins) on one Redis
    group = f"g{uuid.uuid4().hex}"
    local_a, local_b = await here.new_channel(), await here.new_channel()
    remote = await there.new_channel()
    for layer, channel in ((here, local_a), (here, local_b), (there, remote)):
        await layer.group_add(group, channel)
    events = [{"type": "client.event", "n": n} for n in range(50)]
    await here.group_send_many([(group, e) for e in events])
    for layer, channel in ((here, local_a), (here, local_b), (there, remote)):
        got = await _drain(layer, channel, 50)
        assert [e["n"] for e in got] == list(range(50))
    # Redis echoes this layer's own publications back to it: they are not delivered twice.
    await asyncio.sleep(0.2)
    await _nothing_more(here, local_a)
    await _nothing_more(here, local_b)
    await _nothing_more(there, remote)
    await here.flush()
    await there.flush()


async def test_exclude_channel_is_skipped_here_and_there() -> None:
    here, there = _layer(), _layer()
    group = f"g{uuid.uuid4().hex}"
    origin, sibling = await here.new_channel(), await here.new_channel()
    remote = await there.new_channel()
    for layer, channel in ((here, origin), (here, sibling), (there, remote)):
        await layer.group_add(group, channel)
    await here.group_send(group, {"type": "client.event", "exclude_channel": origin})
    assert (await _drain(here, sibling, 1))[0]["exclude_channel"] == origin
    assert len(await _drain(there, remote, 1)) == 1
    await _nothing_more(here, origin)
    await here.flush()
    await there.flush()


async def test_send_to_a_channel_of_this_or_another_process() -> None:
    here, there = _layer(), _layer()
    mine, theirs = await here.new_channel(), await there.new_channel()
    await asyncio.sleep(0.1)  # the remote subscription is live
    await here.send(mine, {"type": "x", "to": "mine"})
    await here.send(theirs, {"type": "x", "to": "theirs"})
    assert (await _drain(here, mine, 1))[0]["to"] == "mine"
    assert (await _drain(there, theirs, 1))[0]["to"] == "theirs"
    await here.flush()
    await there.flush()


async def test_a_discarded_channel_gets_nothing_more() -> None:
    here, there = _layer(), _layer()
    group = f"g{uuid.uuid4().hex}"
    a, b = await here.new_channel(), await there.new_channel()
    await here.group_add(group, a)
    await there.group_add(group, b)
    await here.group_discard(group, a)
    await there.group_send(group, {"type": "client.event"})
    assert len(await _drain(there, b, 1)) == 1
    await _nothing_more(here, a)
    await here.flush()
    await there.flush()


async def test_one_event_for_many_groups_is_one_publication_in_order_with_the_rest(monkeypatch) -> None:
    """A group message goes to each member's user group: with 40 groups, the other process gets
    ONE publication (the fan-out channel) and delivers it to its members of those groups, in
    order with the events before and after it; this process's members get it locally, once."""
    from core import channel_layer

    here, there = _layer(), _layer()
    groups = [f"g{uuid.uuid4().hex}" for _ in range(40)]
    local = [await here.new_channel() for _ in range(3)]
    remote = [await there.new_channel() for _ in range(3)]
    for i, channel in enumerate(local):
        await here.group_add(groups[i], channel)
    await there.group_add(groups[0], remote[0])  # a group with members in both processes
    for i, channel in enumerate(remote[1:]):
        await there.group_add(groups[10 + i], channel)
    await asyncio.sleep(0.1)
    published: list[str] = []
    shard = here._get_layer()._get_shard(here._get_layer().fanout_channel)
    real = shard.publish_many

    async def spy(items: list[tuple[str, bytes]]) -> None:
        published.extend(name for name, _ in items)
        await real(items)

    monkeypatch.setattr(shard, "publish_many", spy)
    before = {"type": "client.event", "n": "before"}
    many = {"type": "client.event", "n": "many"}
    after = {"type": "client.event", "n": "after"}
    await here.group_send_many([(groups[0], before), *((g, many) for g in groups), (groups[0], after)])
    await here.published()
    fanout = here._get_layer().fanout_channel
    assert published.count(fanout) == 1
    assert len(published) == 3  # before, the fan-out, after
    assert [e["n"] for e in await _drain(here, local[0], 3)] == ["before", "many", "after"]
    for channel in local[1:]:
        assert [e["n"] for e in await _drain(here, channel, 1)] == ["many"]
    assert [e["n"] for e in await _drain(there, remote[0], 3)] == ["before", "many", "after"]
    for channel in remote[1:]:
        assert [e["n"] for e in await _drain(there, channel, 1)] == ["many"]
    await asyncio.sleep(0.2)  # no echo, no second copy
    for layer, channel in ((here, local[0]), (here, local[1]), (there, remote[0]), (there, remote[1])):
        await _nothing_more(layer, channel)
    assert channel_layer.FANOUT_MIN_GROUPS <= 40 < channel_layer.FANOUT_MIN_GROUPS * 10
    await here.flush()
    await there.flush()


async def test_an_inbox_wakes_its_consumer_once_per_burst_and_closes() -> None:
    here, there = _layer(), _layer()
    group = f"g{uuid.uuid4().hex}"
    wakes: list[int] = []
    box: list[Any] = []
    channel, inbox = await here.new_inbox(lambda: wakes.append(len(box[0].items)))
    box.append(inbox)
    await here.group_add(group, channel)
    await asyncio.sleep(0.1)
    await here.group_send_many([(group, {"type": "client.event", "n": n}) for n in range(5)])
    assert wakes == [1]  # woken when it stopped being empty, not per event
    assert [e["n"] for e in inbox.items] == list(range(5))
    inbox.items.clear()
    await there.group_send(group, {"type": "client.event", "n": "remote"})
    await there.send(channel, {"type": "client.event", "n": "direct"})
    for _ in range(30):
        if len(inbox.items) == 2:
            break
        await asyncio.sleep(0.05)
    assert [e["n"] for e in inbox.items] == ["remote", "direct"]
    assert wakes == [1, 1]
    await here.group_discard(group, channel)
    await here.close_inbox(channel)
    assert channel not in here._get_layer().channels
    await here.flush()
    await there.flush()


async def test_an_inbox_listens_to_other_processes_only_when_asked() -> None:
    here, there = _layer(), _layer()
    channel, inbox = await here.new_inbox(lambda: None, listen=False)
    shard = here._get_layer()._get_shard(channel)
    assert channel not in shard._subscribed_to
    await here.send(channel, {"type": "client.event", "n": "local"})  # same process: delivered
    assert [e["n"] for e in inbox.items] == ["local"]
    await there.send(channel, {"type": "client.event", "n": "lost"})  # nobody listens in Redis yet
    await asyncio.sleep(0.2)
    assert [e["n"] for e in inbox.items] == ["local"]
    await here.listen_inbox(channel)
    await asyncio.sleep(0.1)
    await there.send(channel, {"type": "client.event", "n": "remote"})
    for _ in range(30):
        if len(inbox.items) == 2:
            break
        await asyncio.sleep(0.05)
    assert [e["n"] for e in inbox.items] == ["local", "remote"]
    await here.close_inbox(channel)
    assert channel not in shard._subscribed_to
    await here.flush()
    await there.flush()


async def test_group_send_many_returns_before_redis_answers_and_keeps_order() -> None:
    """The batch writer does not wait for Redis: events are delivered locally at once and
    published in the background, in order; batches queued during a round trip share the next
    one; ``published`` waits for them."""
    here, there = _layer(), _layer()
    group = f"g{uuid.uuid4().hex}"
    remote = await there.new_channel()
    await there.group_add(group, remote)
    local = await here.new_channel()
    await here.group_add(group, local)
    await asyncio.sleep(0.1)
    shard = here._get_layer()._get_shard(here._get_layer()._get_group_channel_name(group))
    real = shard.publish_many
    round_trips: list[int] = []
    gate = asyncio.Event()

    async def slow(items: list[tuple[str, bytes]]) -> None:
        round_trips.append(len(items))
        await gate.wait()  # Redis is slow to answer
        await real(items)

    shard.publish_many = slow
    for n in range(3):
        await asyncio.wait_for(here.group_send_many([(group, {"type": "client.event", "n": n})]), 0.5)
    assert [e["n"] for e in await _drain(here, local, 3)] == [0, 1, 2]  # local: at once
    await asyncio.sleep(0)
    gate.set()
    await here.published()
    assert round_trips == [1, 2]  # the first, then the two queued meanwhile in one round trip
    assert [e["n"] for e in await _drain(there, remote, 3)] == [0, 1, 2]


async def test_subscriptions_asked_together_are_one_subscribe_and_all_receive(monkeypatch) -> None:
    here, there = _layer(), _layer()
    layer = here._get_layer()
    inboxes = [await here.new_inbox(lambda: None, listen=False) for _ in range(20)]
    shard = layer._get_shard(inboxes[0][0])
    await here.listen_inbox(inboxes[0][0])  # the receiver and its connection exist
    calls: list[int] = []
    original = type(shard._pubsub).subscribe

    async def counting(pubsub: Any, *channels: Any, **kw: Any) -> Any:
        calls.append(len(channels))
        return await original(pubsub, *channels, **kw)

    monkeypatch.setattr(type(shard._pubsub), "subscribe", counting)
    closed = inboxes[-1][0]

    async def close_while_waiting() -> None:
        await here.close_inbox(closed)  # closed before its subscription went out

    await asyncio.gather(*(here.listen_inbox(c) for c, _ in inboxes[1:]), close_while_waiting())
    assert calls == [18]  # one SUBSCRIBE for the 18 still open, none for the closed one
    assert closed not in shard._subscribed_to
    await asyncio.sleep(0.1)
    for n, (channel, _inbox) in enumerate(inboxes[:-1]):
        await there.send(channel, {"type": "client.event", "n": n})
    for _ in range(40):
        if all(len(inbox.items) == 1 for _c, inbox in inboxes[:-1]):
            break
        await asyncio.sleep(0.05)
    assert [inbox.items[0]["n"] if inbox.items else None for _c, inbox in inboxes[:-1]] == list(range(19))
    await here.flush()
    await there.flush()


async def test_a_local_socket_taking_its_event_at_once_changes_nothing_another_process_gets() -> None:
    """A consumer drains its inbox inside the wake call (``core.eager``): the delivery metric
    takes ``published_at`` off the shared event and the frame's text is kept on it. The other
    process still gets the event as it was published."""
    here, there = _layer(), _layer()
    group = f"g{uuid.uuid4().hex}"
    box: list[Any] = []

    def take_at_once() -> None:
        event = box[0].items.pop(0)
        event.pop("published_at", None)
        event["_send"] = {"type": "websocket.send", "text": "{}"}

    channel, inbox = await here.new_inbox(take_at_once)
    box.append(inbox)
    remote = await there.new_channel()
    await here.group_add(group, channel)
    await there.group_add(group, remote)
    await asyncio.sleep(0.1)
    await here.group_send_many([(group, {"type": "client.event", "n": 1, "published_at": 12.5})])
    (got,) = await _drain(there, remote, 1)
    assert got == {"type": "client.event", "n": 1, "published_at": 12.5}
    assert inbox.items == []
    await here.flush()
    await there.flush()
