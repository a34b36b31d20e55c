"""Celery timers for calls: take ids, call a service, idempotent (the call's state decides)."""

from __future__ import annotations

from celery import shared_task

from . import services


@shared_task(name="calls.tasks.call_ring_timeout", acks_late=True, ignore_result=True)
def call_ring_timeout(call_id: int) -> bool:
    """Queued with a countdown of ``CALL_RING_TIMEOUT_SECONDS`` when a call starts ringing."""
    return services.call_ring_timeout(call_id=call_id)


@shared_task(name="calls.tasks.call_reconnect_timeout", acks_late=True, ignore_result=True)
def call_reconnect_timeout(call_id: int, user_id: int) -> bool:
    """Queued with a countdown of ``CALL_RECONNECT_GRACE_SECONDS`` when a call socket drops."""
    return services.call_reconnect_timeout(call_id=call_id, user_id=user_id)


@shared_task(name="calls.tasks.calls_sweep", acks_late=True, ignore_result=True)
def calls_sweep() -> int:
    """Beat: the timers whose tasks were lost or never queued."""
    return services.calls_sweep()
