"""Reads of ratings: a consultation's review for its patient and doctor, a doctor's public list
(visible reviews, no patient named), the reviews a doctor's rating counts."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import QuerySet

from accounts import selectors as account_selectors
from accounts.models import User
from core.errors import NotFound
from payments.models import Consultation

from .models import Review


def counted_reviews(*, doctor_id: int) -> QuerySet[Review]:
    """The reviews a doctor's directory rating is made of: the visible ones (each was written by
    the patient of a completed consultation, ``services.review_create``; a refund after that
    does not take the patient's opinion away)."""
    return Review.objects.filter(doctor_id=doctor_id, hidden_at__isnull=True)


def review_get(*, user: User, consultation_id: int) -> Review:
    """The review of a consultation, for its patient or doctor; 404 ``consultation_not_found``
    for anyone else, ``rating_not_found`` when it has none."""
    consultation = (
        Consultation.objects.filter(pk=consultation_id).values_list("patient_id", "doctor_id").first()
    )
    if consultation is None or user.pk not in consultation:
        raise NotFound("No such consultation.", code="consultation_not_found")
    review = Review.objects.filter(consultation_id=consultation_id).first()
    if review is None:
        raise NotFound("This consultation has no rating.", code="rating_not_found")
    return review


def doctor_reviews(*, doctor_id: int) -> QuerySet[Review]:
    """A verified doctor's public list (newest first; 404 ``doctor_not_found`` otherwise)."""
    account_selectors.doctor_get(doctor_id=doctor_id)
    return counted_reviews(doctor_id=doctor_id).order_by("-id")


def edit_window() -> timedelta:
    """How long after writing it a patient may change their review (``RATING_EDIT_DAYS``)."""
    return timedelta(days=float(settings.RATING_EDIT_DAYS))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _reply(review: Review) -> dict[str, Any] | None:
    if review.replied_at is None:
        return None
    return {"text": review.reply, "created_at": review.replied_at.isoformat()}


def review_data(review: Review) -> dict[str, Any]:
    """A review as its patient and the consultation's doctor see it."""
    return {
        "id": review.pk,
        "consultation_id": review.consultation_id,
        "patient_id": review.patient_id,
        "doctor_id": review.doctor_id,
        "stars": review.stars,
        "comment": review.comment,
        "created_at": review.created_at.isoformat(),
        "edited_at": _iso(review.edited_at),
        "editable_until": (review.created_at + edit_window()).isoformat(),
        "reply": _reply(review),
        "hidden": review.hidden_at is not None,
        "hidden_reason": review.hidden_reason or None,
    }


def received_review_data(review: Review) -> dict[str, Any]:
    """A review in its doctor's export: the stars, their own reply, the hidden mark; not the
    patient's words (an export holds nothing another user wrote to the exporter)."""
    return {
        "id": review.pk,
        "consultation_id": review.consultation_id,
        "stars": review.stars,
        "created_at": review.created_at.isoformat(),
        "reply": _reply(review),
        "hidden": review.hidden_at is not None,
        "hidden_reason": review.hidden_reason or None,
    }


def public_review_data(review: Review) -> dict[str, Any]:
    """A review in a doctor's public list: never who wrote it (a review tells that they saw this
    doctor) nor which consultation."""
    return {
        "id": review.pk,
        "stars": review.stars,
        "comment": review.comment,
        "created_at": review.created_at.isoformat(),
        "edited": review.edited_at is not None,
        "reply": _reply(review),
    }
