"""Messaging's deferred rules (``send_rules.DeferredRule``): content written now for later is bound
to what it was written in, and judged when it is due. The registry refuses anything else, asks
the rules in order, ignores a binding whose rule is gone; payments registers ``consultation``."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from core.errors import ApplicationError, PermissionDenied
from messaging.send_rules import DeferredRule, ReachRule, registry
from messaging.tests.factories import pair
from payments.models import Consultation
from payments.tests.factories import requested

pytestmark = pytest.mark.django_db


def _rule(name: str, bound: int | None, refused_over: int) -> DeferredRule:
    return DeferredRule(
        name=name,
        bind=lambda sender, conversation_id: bound,
        refusal=lambda value, now: (
            ApplicationError(f"{name}_over", "over", status=403) if value > refused_over else None
        ),
    )


def test_the_registry_binds_and_judges_in_order_and_refuses_other_kinds():
    with pytest.raises(ImproperlyConfigured):
        registry.register_deferred(ReachRule(name="x", statement=lambda r: None, orm=lambda r: {}))
    first, second, unbound = _rule("first", 5, 3), _rule("second", 7, 10), _rule("unbound", None, 0)
    with registry.replaced(deferred=[first, second, unbound]):
        bindings = registry.deferred_bindings(sender=None, conversation_id=1)
        assert bindings == {"first": 5, "second": 7}
        error = registry.deferred_refusal(bindings)
        assert error is not None
        assert error.code == "first_over"
        assert registry.deferred_refusal({"second": 7}) is None
        over = registry.deferred_refusal({"second": 11})
        assert over is not None
        assert over.code == "second_over"
        assert registry.deferred_refusal({"gone": 99}) is None  # a rule no longer registered
    assert [r.name for r in registry.deferred] == ["consultation"]


def test_payments_binds_the_open_consultation_and_refuses_once_it_has_ended():
    patient, doctor, conversation = pair()
    assert registry.deferred_bindings(sender=doctor, conversation_id=conversation.pk) == {}
    consultation = requested(patient, doctor)
    bindings = registry.deferred_bindings(sender=doctor, conversation_id=conversation.pk)
    assert bindings == {"consultation": consultation.pk}
    assert registry.deferred_bindings(sender=pair()[1], conversation_id=conversation.pk) == {}
    assert registry.deferred_refusal(bindings) is None

    now = timezone.now()
    Consultation.objects.filter(pk=consultation.pk).update(
        state="completed", accepted_at=now, completed_at=now, closes_at=now + timedelta(days=7)
    )
    assert registry.deferred_refusal(bindings) is None  # inside its follow-up window
    later = now + timedelta(days=8)
    refusal = registry.deferred_refusal(bindings, now=later)
    assert isinstance(refusal, PermissionDenied)
    assert (refusal.code, refusal.status) == ("consultation_closed", 403)
