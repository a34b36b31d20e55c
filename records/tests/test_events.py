"""How many live events each action causes (after commit, to the patient's and the doctor's
groups), and how many queries the record's list reads take whatever their length."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.errors import ApplicationError
from core.realtime import user_group
from records import services

from .conftest import VALID_RX

pytestmark = pytest.mark.django_db


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    sent: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr("messaging.services.events.publish", lambda group, event: sent.append((group, event)))
    return sent


def _frames(sent: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, str]]:
    return [(group, event["frame"]["type"]) for group, event in sent]


def test_events_per_action(
    doctor, patient, consultation, published, django_capture_on_commit_callbacks
) -> None:
    both = [user_group(patient.pk), user_group(doctor.pk)]
    with django_capture_on_commit_callbacks(execute=True):
        note = services.note_create(doctor=doctor, consultation_id=consultation.pk, data={"plan": "rest"})
        services.note_sign(doctor=doctor, note_id=note.pk)
        services.amendment_add(doctor=doctor, note_id=note.pk, reason="r", text="before sharing")
    assert published == []  # drafts, signing without sharing, amending unshared: nobody is told

    with django_capture_on_commit_callbacks(execute=True):
        services.note_share(doctor=doctor, note_id=note.pk)
        services.note_share(doctor=doctor, note_id=note.pk)  # idempotent: no second event
    assert _frames(published) == [(g, "visit_note.shared") for g in both]
    assert published[0][1]["frame"]["data"]["note"]["amendment_count"] == 1

    published.clear()
    with django_capture_on_commit_callbacks(execute=True):
        services.amendment_add(doctor=doctor, note_id=note.pk, reason="r", text="after sharing")
        p = services.prescription_issue(doctor=doctor, consultation_id=consultation.pk, data=dict(VALID_RX))
        services.prescription_cancel(doctor=doctor, prescription_id=p.pk, reason="duplicate")
    assert _frames(published) == [
        *[(g, "visit_note.amended") for g in both],
        *[(g, "prescription.issued") for g in both],
        *[(g, "prescription.cancelled") for g in both],
    ]


def test_refused_actions_publish_nothing(
    doctor, patient, consultation, published, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(ApplicationError, match="quantity"):
        services.prescription_issue(
            doctor=doctor, consultation_id=consultation.pk, data={**VALID_RX, "quantity": 0}
        )
    assert published == []


def _queries(client: Any, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


def test_list_reads_cost_the_same_for_one_or_many(as_user, doctor, patient, consultation) -> None:
    note = services.note_create(doctor=doctor, consultation_id=consultation.pk, data={"plan": "rest"})
    services.note_sign(doctor=doctor, note_id=note.pk, share=True)
    services.prescription_issue(doctor=doctor, consultation_id=consultation.pk, data=dict(VALID_RX))
    client = as_user(patient)
    urls = [
        "/api/v1/prescriptions",
        f"/api/v1/consultations/{consultation.pk}/prescriptions",
        f"/api/v1/consultations/{consultation.pk}/notes",
        f"/api/v1/notes/{note.pk}",
    ]
    one = {url: _queries(client, url) for url in urls}
    for i in range(3):
        services.prescription_issue(doctor=doctor, consultation_id=consultation.pk, data=dict(VALID_RX))
        services.amendment_add(doctor=doctor, note_id=note.pk, reason=f"r{i}", text="more")
    many = {url: _queries(client, url) for url in urls}
    assert many == one
