"""The typed registry every extension point is (``core.registry.Registry``)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from core.registry import Registry


def first(x: int) -> int:
    return x


def second(x: int) -> int:
    return x + 1


def test_entries_keep_their_order_and_a_name_holds_one_entry() -> None:
    rules: Registry[object] = Registry("test rule")
    rules.register("a", first)
    rules.register("b", second)
    rules.register("a", first)  # the same again (``ready`` twice): nothing changes
    assert rules.entries() == (first, second)
    assert rules.names() == ["a", "b"]
    assert first in rules
    assert len(rules) == 2
    with pytest.raises(ImproperlyConfigured, match="two test rules are named 'a'"):
        rules.register("a", second)


def test_replaced_is_undone_after_the_block() -> None:
    rules: Registry[object] = Registry("test rule")
    rules.register("a", first)
    with rules.replaced([("b", second)]):
        assert list(rules) == [second]
    assert list(rules) == [first]
