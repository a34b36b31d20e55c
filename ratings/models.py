"""Ratings: a patient's review of a completed consultation (1-5 stars, an optional comment),
the doctor's one reply, and staff hiding a review with a reason code.

One review per consultation (the database says so: a one-to-one key); the
patient may change it for ``RATING_EDIT_DAYS`` after writing it; the doctor replies once. A
hidden review stays (its author and the doctor still see it, marked hidden) but leaves the
doctor's public list and their average. Writes go through ``ratings.services``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

STARS_MIN, STARS_MAX = 1, 5
COMMENT_MAX = 2000
REPLY_MAX = 2000


class Review(models.Model):
    class HiddenReason(models.TextChoices):
        ABUSIVE = "abusive", "Abusive or offensive"
        PERSONAL_DATA = "personal_data", "Contains personal or health data"
        NOT_ABOUT_CARE = "not_about_care", "Not about the consultation"
        SPAM = "spam", "Spam or advertising"

    consultation = models.OneToOneField(
        "payments.Consultation", on_delete=models.CASCADE, related_name="review"
    )
    # Copied from the consultation (its patient and doctor), for the doctor's list and export.
    patient = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    doctor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    stars = models.PositiveSmallIntegerField()
    comment = models.TextField(max_length=COMMENT_MAX, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # The last change of stars or comment by the patient (None: never changed).
    edited_at = models.DateTimeField(null=True, blank=True)
    reply = models.TextField(max_length=REPLY_MAX, blank=True, default="")
    replied_at = models.DateTimeField(null=True, blank=True)
    hidden_at = models.DateTimeField(null=True, blank=True)
    hidden_reason = models.CharField(max_length=32, choices=HiddenReason.choices, blank=True, default="")
    hidden_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        permissions = [("hide_review", "Can hide or show again a patient's review")]
        constraints = [
            models.CheckConstraint(
                condition=Q(stars__gte=STARS_MIN) & Q(stars__lte=STARS_MAX), name="review_stars_range"
            ),
            models.CheckConstraint(
                condition=(Q(replied_at__isnull=True) & Q(reply=""))
                | (Q(replied_at__isnull=False) & ~Q(reply="")),
                name="review_reply_has_time",
            ),
            models.CheckConstraint(
                condition=(Q(hidden_at__isnull=True) & Q(hidden_reason=""))
                | (
                    Q(hidden_at__isnull=False)
                    & Q(hidden_reason__in=["abusive", "personal_data", "not_about_care", "spam"])
                ),
                name="review_hidden_has_reason",
            ),
            models.CheckConstraint(condition=~Q(patient=models.F("doctor")), name="review_not_of_self"),
        ]
        indexes = [
            # The doctor's public list (newest first) and their average: visible reviews only.
            models.Index(
                fields=["doctor", "-id"], name="review_doctor_visible", condition=Q(hidden_at__isnull=True)
            ),
            models.Index(fields=["patient", "-id"], name="review_by_patient"),
        ]

    def __str__(self) -> str:
        return f"review {self.pk} of consultation {self.consultation_id}"
