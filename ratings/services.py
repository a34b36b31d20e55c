"""Ratings: a patient rates a completed consultation once and may change it for
``RATING_EDIT_DAYS``; the doctor replies once; staff hide a review with a reason (and may show it
again). Every change that moves a doctor's visible reviews recomputes their directory rating in
the same transaction, holding the doctor's profile row (concurrent reviews of one doctor count in
turn). Export and erasure of the account holder's reviews are here too.

Erasure (docs/trust.md): a patient's reviews are deleted with their account (stars and comment
are theirs and would tell the doctor who wrote them); a doctor's replies are blanked.
"""

from __future__ import annotations

import logging
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Avg, Count
from django.utils import timezone

from accounts import services as account_services
from accounts.actors import Actor, require_permission
from accounts.models import DoctorProfile, User
from audit import actions as audited
from audit import services as audit
from audit.client import Client
from core.errors import ApplicationError, NotFound, PermissionDenied
from payments.models import Consultation

from . import selectors
from .models import COMMENT_MAX, REPLY_MAX, STARS_MAX, STARS_MIN, Review

logger = logging.getLogger("healthchat.ratings")
HIDE_PERMISSION = "ratings.hide_review"


# --- Validation ------------------------------------------------------------------------------
def validate_stars(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not STARS_MIN <= value <= STARS_MAX:
        raise ApplicationError(
            "invalid_stars",
            f"stars is a whole number from {STARS_MIN} to {STARS_MAX}.",
            fields={"stars": ["invalid_stars"]},
        )
    return value


def validate_comment(value: str) -> str:
    text = value.strip()
    if len(text) > COMMENT_MAX:
        raise ApplicationError(
            "comment_too_long",
            f"comment is at most {COMMENT_MAX} characters.",
            fields={"comment": ["comment_too_long"]},
        )
    return text


def validate_reply(value: str) -> str:
    text = value.strip()
    if not text:
        raise ApplicationError("empty_reply", "A reply cannot be empty.", fields={"text": ["empty_reply"]})
    if len(text) > REPLY_MAX:
        raise ApplicationError(
            "reply_too_long",
            f"reply is at most {REPLY_MAX} characters.",
            fields={"text": ["reply_too_long"]},
        )
    return text


# --- The directory's rating ------------------------------------------------------------------
def doctor_rating_refresh(*, doctor_id: int) -> tuple[int, Decimal | None]:
    """Recompute the doctor's directory rating from their counted reviews (visible, by the patient
    of a consultation that is completed), holding the profile row: call inside the transaction
    that changed a review."""
    DoctorProfile.objects.select_for_update().filter(user_id=doctor_id).values_list("pk").first()
    totals = selectors.counted_reviews(doctor_id=doctor_id).aggregate(n=Count("id"), avg=Avg("stars"))
    count = int(totals["n"] or 0)
    average = Decimal(str(totals["avg"])).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP) if count else None
    account_services.doctor_rating_set(doctor_id=doctor_id, count=count, average=average)
    return count, average


# --- The patient's review --------------------------------------------------------------------
def _consultation_of(user: User, consultation_id: int, *, for_update: bool = False) -> Consultation:
    """A consultation of ``user`` (patient or doctor); anyone else: ``consultation_not_found``."""
    qs = Consultation.objects.filter(pk=consultation_id)
    if for_update:
        qs = qs.select_for_update()
    consultation = qs.first()
    if consultation is None or user.pk not in (consultation.patient_id, consultation.doctor_id):
        raise NotFound("No such consultation.", code="consultation_not_found")
    return consultation


def review_create(*, patient: User, consultation_id: int, stars: int, comment: str = "") -> Review:
    """Rate a completed consultation, once (``already_rated`` after)."""
    stars = validate_stars(stars)
    text = validate_comment(comment)
    with transaction.atomic():
        consultation = _consultation_of(patient, consultation_id, for_update=True)
        if consultation.patient_id != patient.pk:
            raise PermissionDenied("Only the consultation's patient rates it.", code="not_the_patient")
        if consultation.state != Consultation.State.COMPLETED:
            raise ApplicationError(
                "consultation_not_completed", "Only a completed consultation can be rated.", status=409
            )
        if Review.objects.filter(consultation_id=consultation.pk).exists():
            raise ApplicationError("already_rated", "This consultation is rated already.", status=409)
        try:
            with transaction.atomic():
                review = Review.objects.create(
                    consultation=consultation,
                    patient_id=consultation.patient_id,
                    doctor_id=consultation.doctor_id,
                    stars=stars,
                    comment=text,
                )
        except IntegrityError:  # the same consultation, concurrently (the row lock prevents it)
            raise ApplicationError(
                "already_rated", "This consultation is rated already.", status=409
            ) from None
        doctor_rating_refresh(doctor_id=consultation.doctor_id)
    return review


def _review_of(user: User, consultation_id: int) -> Review:
    consultation = _consultation_of(user, consultation_id)
    review = Review.objects.select_for_update().filter(consultation_id=consultation.pk).first()
    if review is None:
        raise NotFound("This consultation has no rating.", code="rating_not_found")
    return review


def review_update(
    *, patient: User, consultation_id: int, stars: int | None = None, comment: str | None = None
) -> Review:
    """Change the stars and/or the comment, within ``RATING_EDIT_DAYS`` of writing it."""
    new_stars = validate_stars(stars) if stars is not None else None
    new_comment = validate_comment(comment) if comment is not None else None
    with transaction.atomic():
        review = _review_of(patient, consultation_id)
        if review.patient_id != patient.pk:
            raise PermissionDenied("Only the review's author changes it.", code="not_the_patient")
        now = timezone.now()
        if now > review.created_at + selectors.edit_window():
            raise ApplicationError(
                "edit_window_closed",
                f"A rating can be changed for {settings.RATING_EDIT_DAYS} days after it was written.",
                status=409,
            )
        if review.hidden_at is not None:
            raise ApplicationError("rating_hidden", "This review was hidden by staff.", status=409)
        if new_stars is not None:
            review.stars = new_stars
        if new_comment is not None:
            review.comment = new_comment
        review.edited_at = now
        review.save(update_fields=["stars", "comment", "edited_at", "updated_at"])
        doctor_rating_refresh(doctor_id=review.doctor_id)
    return review


def review_reply(*, doctor: User, consultation_id: int, text: str) -> Review:
    """The doctor's one public reply (``already_replied`` after)."""
    reply = validate_reply(text)
    with transaction.atomic():
        review = _review_of(doctor, consultation_id)
        if review.doctor_id != doctor.pk:
            raise PermissionDenied("Only the consultation's doctor replies.", code="not_the_doctor")
        if review.replied_at is not None:
            raise ApplicationError("already_replied", "This review has a reply already.", status=409)
        review.reply, review.replied_at = reply, timezone.now()
        review.save(update_fields=["reply", "replied_at", "updated_at"])
    return review


# --- Staff -----------------------------------------------------------------------------------
def review_hide(*, actor: Actor, review_id: int, reason: str, client: Client | None = None) -> Review:
    """Hide a review from the doctor's public list and average (``ratings.hide_review``); the
    reason is a code (``Review.HiddenReason``), recorded on the review and in the audit log."""
    require_permission(actor, HIDE_PERMISSION)
    if reason not in Review.HiddenReason.values:
        raise ApplicationError("invalid_reason", "Unknown reason.", fields={"reason": ["invalid_choice"]})
    with transaction.atomic():
        review = Review.objects.select_for_update().filter(pk=review_id).first()
        if review is None:
            raise NotFound("No such review.", code="review_not_found")
        review.hidden_at, review.hidden_reason = timezone.now(), reason
        review.hidden_by = actor if isinstance(actor, User) else None
        review.save(update_fields=["hidden_at", "hidden_reason", "hidden_by", "updated_at"])
        doctor_rating_refresh(doctor_id=review.doctor_id)
        audit.record(
            audited.REVIEW_HIDE,
            actor=actor,
            object_type="review",
            object_id=review.pk,
            code=reason,
            client=client,
        )
    return review


def review_show(*, actor: Actor, review_id: int, client: Client | None = None) -> Review:
    """Show a hidden review again (``ratings.hide_review``), audited."""
    require_permission(actor, HIDE_PERMISSION)
    with transaction.atomic():
        review = Review.objects.select_for_update().filter(pk=review_id).first()
        if review is None:
            raise NotFound("No such review.", code="review_not_found")
        review.hidden_at, review.hidden_reason, review.hidden_by = None, "", None
        review.save(update_fields=["hidden_at", "hidden_reason", "hidden_by", "updated_at"])
        doctor_rating_refresh(doctor_id=review.doctor_id)
        audit.record(
            audited.REVIEW_SHOW, actor=actor, object_type="review", object_id=review.pk, client=client
        )
    return review


# --- The account holder's rights -------------------------------------------------------------
def export_user_ratings(user: User) -> dict[str, list[dict[str, Any]]]:
    """The reviews they wrote (as a patient, whole) and those of their consultations (as a
    doctor: the stars, their reply and the hidden mark, not the patient's words)."""
    written = Review.objects.filter(patient=user).order_by("id")
    received = Review.objects.filter(doctor=user).order_by("id")
    return {
        "written": [selectors.review_data(r) for r in written],
        "received": [selectors.received_review_data(r) for r in received],
    }


def erase_user_ratings(user: User) -> None:
    """Account deletion: the patient's reviews are deleted (their doctors' ratings recomputed);
    the doctor's replies are blanked."""
    doctors = set(Review.objects.filter(patient=user).values_list("doctor_id", flat=True))
    Review.objects.filter(patient=user).delete()
    Review.objects.filter(doctor=user).exclude(replied_at=None).update(reply="", replied_at=None)
    for doctor_id in sorted(doctors):
        doctor_rating_refresh(doctor_id=doctor_id)
