"""The on-demand queue by specialty: a patient asks for the first available doctor; the eligible
doctors see it (frame, REST list); exactly one acceptance wins and opens the consultation;
the others are told; unanswered requests expire."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from accounts.models import DoctorProfile, Specialty, User
from accounts.tests.factories import DoctorFactory, PatientFactory
from appointments import on_demand, tasks
from appointments.models import OnDemandRequest
from audit.models import AuditEntry
from core.errors import ApplicationError
from payments import booking as payment_booking
from payments.models import Consultation

UTC = dt.UTC


def specialty(slug: str = "cardiology") -> Specialty:
    return Specialty.objects.get_or_create(slug=slug, defaults={"name": slug.title()})[0]


def doctors_of(spec: Specialty, count: int, **profile: object) -> list[User]:
    return [
        DoctorFactory.create(
            **{"profile__specialty": spec, **{f"profile__{k}": v for k, v in profile.items()}}
        )
        for _ in range(count)
    ]


@pytest.fixture
def frames(monkeypatch):
    from messaging import services as messaging_services

    sent: list[dict] = []
    monkeypatch.setattr(messaging_services.events, "fan_out", lambda **kwargs: sent.append(kwargs))
    return sent


@pytest.mark.django_db
def test_request_reaches_eligible_doctors_only(frames, django_capture_on_commit_callbacks):
    cardio, derm = specialty("cardiology"), specialty("dermatology")
    online = doctors_of(cardio, 2, consultation_fee=4000)
    offline = doctors_of(cardio, 1)[0]
    payment_booking.availability_set(doctor=offline, online=False)
    unverified = doctors_of(cardio, 1, verification_status="pending", verified_at=None)[0]
    no_fee = doctors_of(cardio, 1, consultation_fee=0)[0]
    other = doctors_of(derm, 1)[0]
    patient = PatientFactory.create()
    with django_capture_on_commit_callbacks(execute=True):
        request = on_demand.request_create(
            patient=patient, specialty="cardiology", kind="video", reason="chest pain"
        )
    assert request.state == "open"
    (frame,) = [f for f in frames if f["frame"]["type"] == "on_demand.updated"]
    assert frame["user_ids"] == sorted([patient.pk, *(d.pk for d in online)])
    data = frame["frame"]["data"]["request"]
    assert data["state"] == "open"
    assert data["specialty"] == "cardiology"
    assert "chest" not in str(frame)  # no reason in the frame
    assert "patient" not in str(data)
    # Doctors' REST list: the queue of their specialty, with the reason (audited).
    assert [r.pk for r in on_demand.request_list(user=online[0])] == [request.pk]
    assert list(on_demand.request_list(user=other)) == []
    with pytest.raises(ApplicationError) as refused:
        on_demand.request_list(user=unverified)
    assert refused.value.code == "not_verified"
    for outsider in (other, unverified, no_fee):
        with pytest.raises(ApplicationError) as hidden:
            on_demand.request_accept(doctor=outsider, request_id=request.pk)
        assert hidden.value.code in {"request_not_found", "not_verified", "doctor_has_no_fee"}
    with pytest.raises(ApplicationError) as off:
        on_demand.request_accept(doctor=offline, request_id=request.pk)
    assert off.value.code == "doctor_offline"
    assert OnDemandRequest.objects.get(pk=request.pk).state == "open"  # refusals roll back


@pytest.mark.django_db
def test_rest_flow_accept_opens_the_consultation_at_the_winners_price(
    client_for, frames, django_capture_on_commit_callbacks
):
    cardio = specialty()
    first, second = doctors_of(cardio, 2, consultation_fee=4500)
    DoctorProfile.objects.filter(user=second).update(consultation_fee=9900)
    patient = PatientFactory.create()
    api = client_for(patient)
    created = api.post(
        "/api/v1/on-demand", {"specialty": "cardiology", "kind": "chat", "reason": "rash"}, format="json"
    )
    assert created.status_code == 201, created.content
    request_id = created.json()["id"]
    again = api.post("/api/v1/on-demand", {"specialty": "cardiology", "kind": "chat"}, format="json")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "request_open"
    bad = api.post("/api/v1/on-demand", {"specialty": "astrology", "kind": "chat"}, format="json")
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "unknown_specialty"

    queue = client_for(second).get("/api/v1/on-demand")
    assert queue.status_code == 200
    assert [(r["id"], r["reason"]) for r in queue.json()] == [(request_id, "rash")]
    assert AuditEntry.objects.filter(action="on_demand.list", actor_id=second.pk).exists()

    frames.clear()
    with django_capture_on_commit_callbacks(execute=True):
        won = client_for(second).post(f"/api/v1/on-demand/{request_id}/accept", {}, format="json")
    assert won.status_code == 200, won.content
    body = won.json()
    assert body["state"] == "accepted"
    assert body["doctor_id"] == second.pk
    consultation = Consultation.objects.get(pk=body["consultation_id"])
    assert consultation.price == 9900  # the winner's fee
    assert consultation.doctor_id == second.pk
    assert consultation.patient_id == patient.pk
    assert consultation.reason == "rash"
    updated = [f for f in frames if f["frame"]["type"] == "on_demand.updated"]
    assert updated
    assert set(updated[-1]["user_ids"]) == {patient.pk, first.pk, second.pk}
    assert updated[-1]["frame"]["data"]["request"]["state"] == "accepted"
    assert updated[-1]["frame"]["data"]["request"]["consultation_id"] == consultation.pk

    late = client_for(first).post(f"/api/v1/on-demand/{request_id}/accept", {}, format="json")
    assert late.status_code == 409
    assert late.json()["error"]["code"] == "request_taken"
    # The loser no longer sees it; the patient and the winner do.
    assert client_for(first).get(f"/api/v1/on-demand/{request_id}").status_code == 404
    assert client_for(patient).get(f"/api/v1/on-demand/{request_id}").json()["state"] == "accepted"
    assert client_for(second).get(f"/api/v1/on-demand/{request_id}").status_code == 200
    cancel = api.post(f"/api/v1/on-demand/{request_id}/cancel", {}, format="json")
    assert cancel.status_code == 409
    assert cancel.json()["error"]["code"] == "request_taken"


@pytest.mark.django_db(transaction=True)
def test_ten_doctors_accept_at_once_exactly_one_wins(stripe_fake):
    cardio = specialty()
    doctors = doctors_of(cardio, 10)
    patient = PatientFactory.create()
    request = on_demand.request_create(patient=patient, specialty="cardiology", kind="chat")
    barrier = threading.Barrier(len(doctors))
    outcomes: dict[int, str] = {}
    lock = threading.Lock()

    def accept(doctor: User) -> None:
        barrier.wait(timeout=120)
        result = "none"
        for _attempt in range(3):
            try:
                on_demand.request_accept(doctor=doctor, request_id=request.pk)
                result = "won"
            except ApplicationError as exc:
                result = exc.code
            except OperationalError as exc:  # the pool's timeout on a loaded machine: retry
                result = f"unexpected {exc}"
                continue
            except Exception as exc:
                result = f"unexpected {type(exc).__name__}: {exc}"
            finally:
                connection.close()
            break
        with lock:
            outcomes[doctor.pk] = result

    threads = [threading.Thread(target=accept, args=(d,)) for d in doctors]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(outcomes) == 10, outcomes
    assert sorted(outcomes.values()).count("won") == 1, outcomes
    assert set(outcomes.values()) == {"won", "request_taken"}, outcomes
    winner = next(pk for pk, result in outcomes.items() if result == "won")
    request.refresh_from_db()
    assert request.state == "accepted"
    assert request.doctor_id == winner
    assert Consultation.objects.count() == 1
    assert Consultation.objects.get().doctor_id == winner
    # One PaymentIntent, for the winner's consultation only.
    assert len(stripe_fake.calls("POST", "/v1/payment_intents")) == 1


@pytest.mark.django_db
def test_unanswered_request_expires_by_the_beat_task(settings, frames, django_capture_on_commit_callbacks):
    cardio = specialty()
    doctor = doctors_of(cardio, 1)[0]
    patient = PatientFactory.create()
    request = on_demand.request_create(patient=patient, specialty="cardiology", kind="chat")
    assert tasks.expire_on_demand() == 0
    OnDemandRequest.objects.filter(pk=request.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    with pytest.raises(ApplicationError) as closed:  # accepting checks the time itself
        on_demand.request_accept(doctor=doctor, request_id=request.pk)
    assert closed.value.code == "request_closed"
    frames.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.expire_on_demand() == 1
    request.refresh_from_db()
    assert request.state == "expired"
    assert request.ended_at is not None
    (frame,) = frames
    assert frame["user_ids"] == sorted([patient.pk, doctor.pk])
    assert frame["frame"]["data"]["request"]["state"] == "expired"
    assert tasks.expire_on_demand() == 0
    # The patient may ask again.
    assert on_demand.request_create(patient=patient, specialty="cardiology", kind="chat").state == "open"


@pytest.mark.django_db
def test_patient_cancels_and_roles_are_checked():
    cardio = specialty()
    doctor = doctors_of(cardio, 1)[0]
    patient, stranger = PatientFactory.create(), PatientFactory.create()
    request = on_demand.request_create(patient=patient, specialty="cardiology", kind="voice")
    with pytest.raises(ApplicationError) as not_theirs:
        on_demand.request_cancel(patient=stranger, request_id=request.pk)
    assert not_theirs.value.code == "request_not_found"
    with pytest.raises(ApplicationError) as hidden:
        on_demand.request_get(user=stranger, request_id=request.pk)
    assert hidden.value.code == "request_not_found"
    with pytest.raises(ApplicationError) as doctors_cannot_ask:
        on_demand.request_create(patient=doctor, specialty="cardiology", kind="chat")
    assert doctors_cannot_ask.value.code == "patients_only"
    with pytest.raises(ApplicationError) as patients_cannot_take:
        on_demand.request_accept(doctor=stranger, request_id=request.pk)
    assert patients_cannot_take.value.code == "doctors_only"
    assert on_demand.request_cancel(patient=patient, request_id=request.pk).state == "cancelled"
    assert on_demand.request_cancel(patient=patient, request_id=request.pk).state == "cancelled"
    with pytest.raises(ApplicationError) as closed:
        on_demand.request_accept(doctor=doctor, request_id=request.pk)
    assert closed.value.code == "request_closed"
