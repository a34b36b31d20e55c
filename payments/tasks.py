"""Celery tasks of payments: they take ids, are idempotent, and call a service."""

from __future__ import annotations

import logging

from celery import shared_task

from core.errors import ApplicationError

from . import selectors, services

logger = logging.getLogger("healthchat.payments")


@shared_task(name="payments.tasks.expire_consultations")
def expire_consultations() -> int:
    """Expire requests the doctor did not accept in time (beat, every few minutes)."""
    expired = 0
    for consultation_id in selectors.consultation_ids_due_for_expiry():
        try:
            consultation = services.consultation_expire(consultation_id=consultation_id, source="task")
        except ApplicationError:
            logger.warning("could not expire consultation %s; will retry", consultation_id)
            continue
        if consultation is not None and consultation.state == "expired":
            expired += 1
    return expired


@shared_task(name="payments.tasks.retry_payouts")
def retry_payouts(doctor_id: int | None = None) -> int:
    """Transfer doctors' shares that waited for a payout account (beat, and on account.updated)."""
    done = 0
    for consultation_id in selectors.consultation_ids_pending_payout(doctor_id=doctor_id):
        try:
            consultation = services.consultation_settle(consultation_id=consultation_id, source="task")
        except ApplicationError:
            logger.warning("could not settle consultation %s; will retry", consultation_id)
            continue
        if consultation.payout_status == "transferred":
            done += 1
    return done
