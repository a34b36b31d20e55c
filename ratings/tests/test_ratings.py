"""Ratings on the real PostgreSQL (issue 23): a patient rates a completed consultation once and
may change it for RATING_EDIT_DAYS; the doctor replies once; staff hide a review with a reason
(a permission, audited); the doctor directory shows the average and count of visible reviews."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.utils import timezone

from accounts import services as account_services
from accounts.models import DoctorProfile, User
from accounts.tests.factories import DoctorFactory, PatientFactory
from audit.models import AuditEntry
from conftest import unique_phone
from core.errors import ApplicationError
from messaging.tests.factories import pair
from payments.tests.factories import requested
from ratings import services
from ratings.models import Review
from ratings.tests.factories import completed, reviewed

pytestmark = pytest.mark.django_db


def url(consultation_id: int) -> str:
    return f"/api/v1/consultations/{consultation_id}/rating"


def profile(doctor: User) -> DoctorProfile:
    return DoctorProfile.objects.get(user=doctor)


def staff_with(*perms: str) -> User:
    user: User = User.objects.create_user(
        unique_phone(), "pw-for-tests-only", is_staff=True, display_name="Clerk"
    )
    for perm in perms:
        app_label, codename = perm.split(".", 1)
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return User.objects.get(pk=user.pk)


def test_patients_rate_once_and_the_directory_shows_average_and_count(api):
    first = completed()
    doctor = first.doctor
    second = completed(PatientFactory(), doctor)

    response = api(first.patient).post(
        url(first.pk), {"stars": 5, "comment": "Clear and kind."}, format="json"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["stars"], body["comment"], body["consultation_id"], body["doctor_id"], body["reply"]) == (
        5,
        "Clear and kind.",
        first.pk,
        doctor.pk,
        None,
    )
    assert (body["hidden"], body["hidden_reason"], body["edited_at"]) == (False, None, None)
    assert api(second.patient).post(url(second.pk), {"stars": 4}, format="json").status_code == 201

    again = api(first.patient).post(url(first.pk), {"stars": 1}, format="json")
    assert (again.status_code, again.json()["error"]["code"]) == (409, "already_rated")
    assert Review.objects.get(consultation=first).stars == 5

    listed = api(PatientFactory()).get("/api/v1/doctors").json()["results"]
    entry = next(d for d in listed if d["id"] == doctor.pk)
    assert (entry["rating_average"], entry["rating_count"]) == (4.5, 2)
    detail = api(PatientFactory()).get(f"/api/v1/doctors/{doctor.pk}").json()
    assert (detail["rating_average"], detail["rating_count"]) == (4.5, 2)
    # A doctor without reviews: no average.
    other = api(PatientFactory()).get(f"/api/v1/doctors/{DoctorFactory().pk}").json()
    assert (other["rating_average"], other["rating_count"]) == (None, 0)

    # Both participants read it; the doctor's public list names no patient.
    assert api(doctor).get(url(first.pk)).json()["stars"] == 5
    public = api(PatientFactory()).get(f"/api/v1/doctors/{doctor.pk}/ratings").json()["results"]
    assert [(r["stars"], r["comment"]) for r in public] == [(4, ""), (5, "Clear and kind.")]
    assert not {"patient_id", "consultation_id"} & set(public[0])


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("not_completed", 409, "consultation_not_completed"),
        ("doctor", 403, "not_the_patient"),
        ("stranger", 404, "consultation_not_found"),
        ("zero_stars", 400, "invalid_stars"),
        ("six_stars", 400, "invalid_stars"),
        ("string_stars", 400, "invalid"),
        ("long_comment", 400, "comment_too_long"),
        ("unknown_field", 400, "invalid"),
    ],
)
def test_refusals_when_rating(api, case, status, code):
    consultation = completed()
    author, body = consultation.patient, {"stars": 4}
    if case == "not_completed":
        patient, doctor, _ = pair()
        consultation = requested(patient, doctor)
        author = patient
    elif case == "doctor":
        author = consultation.doctor
    elif case == "stranger":
        author = PatientFactory()
    elif case == "zero_stars":
        body = {"stars": 0}
    elif case == "six_stars":
        body = {"stars": 6}
    elif case == "string_stars":
        body = {"stars": "5"}
    elif case == "long_comment":
        body = {"stars": 3, "comment": "x" * 2001}
    elif case == "unknown_field":
        body = {"stars": 3, "patient_id": 1}
    response = api(author).post(url(consultation.pk), body, format="json")
    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code
    assert not Review.objects.exists()


def test_the_patient_may_change_it_for_seven_days(api, settings):
    review = reviewed(stars=2, comment="Late.")
    patient, doctor = review.patient, review.doctor
    assert (profile(doctor).rating_count, profile(doctor).rating_average) == (1, Decimal("2.00"))

    changed = api(patient).patch(url(review.consultation_id), {"stars": 4}, format="json")
    assert changed.status_code == 200, changed.content
    assert (changed.json()["stars"], changed.json()["comment"]) == (4, "Late.")
    assert changed.json()["edited_at"] is not None
    assert profile(doctor).rating_average == Decimal("4.00")
    assert api(PatientFactory()).get(f"/api/v1/doctors/{doctor.pk}/ratings").json()["results"][0]["edited"]

    assert api(doctor).patch(url(review.consultation_id), {"stars": 5}, format="json").json()["error"][
        "code"
    ] == ("not_the_patient")
    # Eight days later: closed.
    Review.objects.filter(pk=review.pk).update(created_at=timezone.now() - timedelta(days=8))
    late = api(patient).patch(url(review.consultation_id), {"comment": "On time after all."}, format="json")
    assert (late.status_code, late.json()["error"]["code"]) == (409, "edit_window_closed")
    settings.RATING_EDIT_DAYS = 10
    assert (
        api(patient).patch(url(review.consultation_id), {"comment": "ok"}, format="json").status_code == 200
    )

    missing = api(patient).get(url(completed(patient, doctor).pk))
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "rating_not_found")


def test_the_doctor_replies_once(api):
    review = reviewed(stars=3)
    doctor, patient = review.doctor, review.patient
    path = url(review.consultation_id) + "/reply"
    assert (
        api(patient).put(path, {"text": "me too"}, format="json").json()["error"]["code"] == "not_the_doctor"
    )
    empty = api(doctor).put(path, {"text": "   "}, format="json")
    assert (empty.status_code, empty.json()["error"]["code"]) == (400, "empty_reply")
    assert api(DoctorFactory()).put(path, {"text": "x"}, format="json").status_code == 404

    replied = api(doctor).put(path, {"text": "Thank you for the feedback."}, format="json")
    assert replied.status_code == 200, replied.content
    assert replied.json()["reply"]["text"] == "Thank you for the feedback."
    twice = api(doctor).put(path, {"text": "Again"}, format="json")
    assert (twice.status_code, twice.json()["error"]["code"]) == (409, "already_replied")
    public = api(PatientFactory()).get(f"/api/v1/doctors/{doctor.pk}/ratings").json()["results"]
    assert public[0]["reply"]["text"] == "Thank you for the feedback."


@pytest.mark.parametrize(
    ("text", "code"), [("", "empty_reply"), ("   ", "empty_reply"), ("x" * 2001, "reply_too_long")]
)
def test_a_bad_reply_is_refused_with_its_code_naming_the_field_sent(api, text, code):
    """An empty reply is ``empty_reply`` (as documented), not DRF's ``invalid``; ``fields`` names
    the request's ``text``."""
    review = reviewed(stars=3)
    answer = api(review.doctor).put(url(review.consultation_id) + "/reply", {"text": text}, format="json")
    assert answer.status_code == 400, answer.content
    assert (answer.json()["error"]["code"], answer.json()["error"]["fields"]) == (code, {"text": [code]})
    review.refresh_from_db()
    assert review.replied_at is None


def test_staff_hide_with_a_reason_needs_the_permission_and_is_audited(api):
    kept = reviewed(stars=5)
    doctor = kept.doctor
    hidden = reviewed(doctor, stars=1, comment="rude words")
    assert profile(doctor).rating_average == Decimal("3.00")

    for actor in (staff_with(), staff_with("ratings.view_review")):
        with pytest.raises(ApplicationError) as refused:
            services.review_hide(actor=actor, review_id=hidden.pk, reason="abusive")
        assert refused.value.code == "permission_denied"
    with pytest.raises(ApplicationError, match="Unknown reason"):
        services.review_hide(actor=staff_with("ratings.hide_review"), review_id=hidden.pk, reason="meh")

    clerk = staff_with("ratings.hide_review")
    services.review_hide(actor=clerk, review_id=hidden.pk, reason="abusive")
    hidden.refresh_from_db()
    assert (hidden.hidden_reason, hidden.hidden_by_id) == ("abusive", clerk.pk)
    assert (profile(doctor).rating_count, profile(doctor).rating_average) == (1, Decimal("5.00"))
    public = api(PatientFactory()).get(f"/api/v1/doctors/{doctor.pk}/ratings").json()["results"]
    assert [r["id"] for r in public] == [kept.pk]
    seen = api(hidden.patient).get(url(hidden.consultation_id)).json()
    assert (seen["hidden"], seen["hidden_reason"]) == (True, "abusive")
    refused_edit = api(hidden.patient).patch(url(hidden.consultation_id), {"stars": 2}, format="json")
    assert (refused_edit.status_code, refused_edit.json()["error"]["code"]) == (409, "rating_hidden")
    entry = AuditEntry.objects.get(action="review.hide")
    assert (entry.actor_id, entry.object_type, entry.object_id, entry.code) == (
        clerk.pk,
        "review",
        str(hidden.pk),
        "abusive",
    )

    services.review_show(actor=clerk, review_id=hidden.pk)
    assert (profile(doctor).rating_count, profile(doctor).rating_average) == (2, Decimal("3.00"))
    assert AuditEntry.objects.filter(action="review.show", object_id=str(hidden.pk)).count() == 1


def test_the_admin_action_hides_with_its_reason_only_for_holders_of_the_permission():
    review = reviewed(stars=2)
    viewer = staff_with("ratings.view_review")
    holder = staff_with("ratings.view_review", "ratings.hide_review")
    for user, hidden in ((viewer, False), (holder, True)):
        client = Client()
        client.force_login(user)
        changelist = client.get("/admin/ratings/review/")
        assert changelist.status_code == 200
        assert (b"hide_personal_data" in changelist.content) is hidden
        client.post(
            "/admin/ratings/review/", {"action": "hide_personal_data", "_selected_action": [str(review.pk)]}
        )
        review.refresh_from_db()
        assert (review.hidden_at is not None, review.hidden_reason) == (
            hidden,
            "personal_data" if hidden else "",
        )
    assert AuditEntry.objects.filter(action="admin.view", object_type="ratings.review").exists()
    assert AuditEntry.objects.filter(action="review.hide", code="personal_data").count() == 1


def test_export_and_erasure(firebase_admin_api):
    review = reviewed(stars=4, comment="Helpful")
    doctor, patient = review.doctor, review.patient
    services.review_reply(doctor=doctor, consultation_id=review.consultation_id, text="Thanks")
    other = reviewed(doctor, stars=2)

    written = account_services.user_export(user=patient)["ratings"]
    assert [(r["id"], r["stars"], r["comment"], r["reply"]["text"]) for r in written["written"]] == [
        (review.pk, 4, "Helpful", "Thanks")
    ]
    assert written["received"] == []
    received = account_services.user_export(user=doctor)["ratings"]["received"]
    assert [r["id"] for r in received] == [review.pk, other.pk]
    assert "comment" not in received[0]

    account_services.user_delete(user=patient, actor=patient)
    assert not Review.objects.filter(pk=review.pk).exists()
    assert (profile(doctor).rating_count, profile(doctor).rating_average) == (1, Decimal("2.00"))

    services.review_reply(doctor=doctor, consultation_id=other.consultation_id, text="Sorry to hear")
    account_services.user_delete(user=doctor, actor=doctor)
    other.refresh_from_db()
    assert (other.reply, other.replied_at, other.stars) == ("", None, 2)


@pytest.mark.django_db(transaction=True)
def test_concurrent_ratings_of_one_consultation_make_one_review():
    consultation = completed()
    barrier = threading.Barrier(6)
    outcomes: list[Any] = []

    def rate(stars: int) -> None:
        try:
            barrier.wait()
            services.review_create(patient=consultation.patient, consultation_id=consultation.pk, stars=stars)
            outcomes.append("created")
        except ApplicationError as exc:
            outcomes.append(exc.code)
        finally:
            connection.close()

    threads = [threading.Thread(target=rate, args=(stars,)) for stars in (1, 2, 3, 4, 5, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["already_rated"] * 5 + ["created"]
    assert Review.objects.filter(consultation=consultation).count() == 1
    assert profile(consultation.doctor).rating_count == 1
