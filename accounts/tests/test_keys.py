"""The end-to-end encryption key directory: upload, bundles, one-time key consumption, rules."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from accounts import keys, xeddsa
from accounts.models import DeviceIdentity, KyberPreKey, OneTimePreKey, SignedPreKey, User
from accounts.tests.factories import DeviceFactory, DoctorFactory, PatientFactory
from accounts.tests.helpers import assert_error
from accounts.tests.signal_keys import SignalIdentity, b64, ec_public_key, kyber_public_key
from messaging.models import Event
from messaging.tests.factories import pair

pytestmark = pytest.mark.django_db

Client = Callable[..., APIClient]


def put_keys(client: APIClient, body: dict[str, Any]) -> Any:
    return client.put("/api/v1/keys", body, format="json")


@pytest.fixture
def published(client_for: Client) -> Callable[..., tuple[Any, SignalIdentity]]:
    """A device of ``user`` with keys uploaded through the API."""

    def publish(user: User, **kwargs: Any) -> tuple[Any, SignalIdentity]:
        device = DeviceFactory.create(user=user)
        identity = SignalIdentity()
        response = put_keys(client_for(user), identity.upload(device.pk, **kwargs))
        assert response.status_code == 200, response.content
        return device, identity

    return publish


# --- XEdDSA ------------------------------------------------------------------------------------
def test_xeddsa_accepts_libsignal_signatures_and_refuses_tampering():
    # Made by @signalapp/libsignal-client 0.103.0: IdentityKeyPair.privateKey.sign(prekey).
    identity = bytes.fromhex("052c215f04ed4a81481afadb7d9cb0e8724d8e9f6d1e4b2f464f69cc6d432f565d")
    prekey = bytes.fromhex("05ed4f886aac574e0f0e575048489490f4861f1af8b148336eab99206553ea3e5d")
    signature = bytes.fromhex(
        "1ab6b9a20cf345bf7d1b21f6fdf8564ba032bc0ec9e21a7f099ce98a9f95992f"
        "1fc7b19cb8d5d581f551f2634320ab078dd75f62ced25b0037adba1c35034f02"
    )
    assert xeddsa.verify(identity, prekey, signature)
    assert not xeddsa.verify(identity, prekey[:-1] + b"\x00", signature)
    assert not xeddsa.verify(identity, prekey, signature[:5] + bytes([signature[5] ^ 1]) + signature[6:])
    assert not xeddsa.verify(identity, prekey, bytes([*signature[:63], signature[63] ^ 0x80]))
    assert not xeddsa.verify(b"\x06" + identity[1:], prekey, signature)
    assert not xeddsa.verify(identity, prekey, signature[:63])
    other = SignalIdentity()
    assert xeddsa.verify(other.public_key, b"msg", other.sign(b"msg"))
    assert not xeddsa.verify(other.public_key, b"msg", SignalIdentity().sign(b"msg"))


# --- PUT keys ---------------------------------------------------------------------------------
def test_upload_then_count_then_idempotent_refill(client_for):
    user = PatientFactory.create()
    device = DeviceFactory.create(user=user)
    identity = SignalIdentity()
    client = client_for(user)
    body = identity.upload(device.pk, one_time=range(1, 4), kyber=range(1, 3))
    response = put_keys(client, body)
    assert response.status_code == 200, response.content
    assert response.json() == {
        "device_id": device.pk,
        "one_time_prekeys": 3,
        "kyber_prekeys": 2,
        "identity_changed": False,
    }
    assert put_keys(client, body).json()["one_time_prekeys"] == 3  # the same upload again
    refill = identity.upload(device.pk, one_time=range(4, 9), kyber=range(3, 5), full=False)
    assert put_keys(client, refill).json()["one_time_prekeys"] == 8
    counted = client.get(f"/api/v1/keys/count?device_id={device.pk}")
    assert counted.json() == {"one_time_prekeys": 8, "kyber_prekeys": 4}
    assert client.get("/api/v1/keys/count", HTTP_X_DEVICE_ID=str(device.pk)).json()["kyber_prekeys"] == 4
    stored = DeviceIdentity.objects.get(device=device)
    assert bytes(stored.identity_key) == identity.public_key
    assert KyberPreKey.objects.filter(device=device, last_resort=True).count() == 1
    # The same id with another key is a conflict, not a silent replacement.
    body["one_time_prekeys"] = [{"id": 1, "public_key": b64(ec_public_key())}]
    assert_error(put_keys(client, body), 409, "prekey_conflict")


def test_only_the_callers_own_device(client_for):
    owner = PatientFactory.create()
    device = DeviceFactory.create(user=owner)
    intruder = PatientFactory.create()
    assert_error(put_keys(client_for(intruder), SignalIdentity().upload(device.pk)), 404, "device_not_found")
    assert_error(
        client_for(intruder).get(f"/api/v1/keys/count?device_id={device.pk}"), 404, "device_not_found"
    )
    assert not DeviceIdentity.objects.exists()


@pytest.mark.parametrize(
    ("mutate", "status", "code"),
    [
        (lambda b, i: b.update(identity_key=b64(b"\x05" + b"\x01" * 31)), 422, "invalid_key"),
        (lambda b, i: b.update(identity_key="not base64!"), 422, "invalid_key"),
        (lambda b, i: b.update(identity_key=b64(b"\x06" + i.public_key[1:])), 422, "invalid_key"),
        (lambda b, i: b.update(registration_id=0), 422, "invalid_key"),
        (
            lambda b, i: b["signed_prekey"].update(signature=b64(SignalIdentity().sign(b"x"))),
            422,
            "invalid_signature",
        ),
        (
            lambda b, i: b["signed_prekey"].update(public_key=b64(ec_public_key())),
            422,
            "invalid_signature",
        ),
        (
            lambda b, i: b["kyber_prekeys"][0].update(public_key=b64(kyber_public_key())),
            422,
            "invalid_signature",
        ),
        (
            lambda b, i: b["last_resort_kyber_prekey"].update(signature=b64(b"\x00" * 64)),
            422,
            "invalid_signature",
        ),
        (lambda b, i: b["kyber_prekeys"][0].update(public_key=b64(b"\x08" + b"k" * 100)), 422, "invalid_key"),
        (
            lambda b, i: b["one_time_prekeys"][0].update(public_key=b64(b"\x05" + b"k" * 40)),
            422,
            "invalid_key",
        ),
        (lambda b, i: b["one_time_prekeys"].append(dict(b["one_time_prekeys"][0])), 422, "invalid_key"),
        (lambda b, i: b.pop("signed_prekey"), 422, "keys_incomplete"),
        (lambda b, i: b.pop("last_resort_kyber_prekey"), 422, "keys_incomplete"),
        (lambda b, i: b.update(surprise=1), 400, "invalid"),
    ],
)
def test_bad_uploads_are_refused_and_store_nothing(client_for, mutate, status, code):
    user = PatientFactory.create()
    device = DeviceFactory.create(user=user)
    identity = SignalIdentity()
    body = identity.upload(device.pk)
    mutate(body, identity)
    assert_error(put_keys(client_for(user), body), status, code)
    assert not DeviceIdentity.objects.exists()
    assert not OneTimePreKey.objects.exists()
    assert not KyberPreKey.objects.exists()


def test_stock_is_capped(client_for, settings):
    settings.HEALTHCHAT_PREKEY_MAX_STOCK = 6
    user = PatientFactory.create()
    device = DeviceFactory.create(user=user)
    identity = SignalIdentity()
    client = client_for(user)
    assert put_keys(client, identity.upload(device.pk, one_time=range(1, 6))).status_code == 200
    assert_error(
        put_keys(client, identity.upload(device.pk, one_time=range(6, 8), kyber=[], full=False)),
        422,
        "too_many_prekeys",
    )


# --- GET keys/{user_id} -------------------------------------------------------------------------
def test_bundle_consumes_one_of_each_then_falls_back_to_last_resort(client_for, published):
    patient, doctor, _conversation = pair()
    device, identity = published(doctor, one_time=range(1, 3), kyber=range(1, 3), last_resort_id=500)
    client = client_for(patient)
    seen_one_time, seen_kyber = [], []
    for _ in range(2):
        response = client.get(f"/api/v1/keys/{doctor.pk}")
        assert response.status_code == 200, response.content
        (bundle,) = response.json()["devices"]
        assert bundle["device_id"] == device.pk
        assert bundle["registration_id"] == identity.registration_id
        assert base64.b64decode(bundle["identity_key"]) == identity.public_key
        signed = bundle["signed_prekey"]
        assert xeddsa.verify(
            identity.public_key, base64.b64decode(signed["public_key"]), base64.b64decode(signed["signature"])
        )
        assert bundle["kyber_prekey"]["last_resort"] is False
        seen_one_time.append(bundle["one_time_prekey"]["id"])
        seen_kyber.append(bundle["kyber_prekey"]["id"])
    assert sorted(seen_one_time) == [1, 2]
    assert sorted(seen_kyber) == [1, 2]
    for _ in range(2):  # exhausted: no one-time prekey, the last-resort Kyber key every time
        (bundle,) = client.get(f"/api/v1/keys/{doctor.pk}").json()["devices"]
        assert bundle["one_time_prekey"] is None
        assert bundle["kyber_prekey"]["id"] == 500
        assert bundle["kyber_prekey"]["last_resort"] is True
    assert client_for(doctor).get(f"/api/v1/keys/count?device_id={device.pk}").json() == {
        "one_time_prekeys": 0,
        "kyber_prekeys": 0,
    }


def test_bundles_for_every_device_and_one_device(client_for, published):
    patient, doctor, _conversation = pair()
    phone, _ = published(doctor)
    tablet, _ = published(doctor)
    DeviceFactory.create(user=doctor)  # push-only device: no keys, no bundle
    body = client_for(patient).get(f"/api/v1/keys/{doctor.pk}").json()
    assert body["user_id"] == doctor.pk
    assert [d["device_id"] for d in body["devices"]] == [phone.pk, tablet.pk]
    only = client_for(patient).get(f"/api/v1/keys/{doctor.pk}?device_id={tablet.pk}").json()
    assert [d["device_id"] for d in only["devices"]] == [tablet.pk]
    # A user's own other devices (the sender's devices get ciphertexts too).
    mine = client_for(doctor).get(f"/api/v1/keys/{doctor.pk}").json()
    assert len(mine["devices"]) == 2


def test_who_may_fetch_bundles(client_for, published):
    patient = PatientFactory.create()
    doctor = DoctorFactory.create()
    other_patient = PatientFactory.create()
    published(patient)
    published(doctor)
    # A patient may open a conversation with a verified doctor, so may fetch their keys.
    assert client_for(patient).get(f"/api/v1/keys/{doctor.pk}").status_code == 200
    # A doctor may not reach a patient they have no conversation or consultation with.
    assert_error(client_for(doctor).get(f"/api/v1/keys/{patient.pk}"), 403, "keys_not_allowed")
    assert_error(client_for(other_patient).get(f"/api/v1/keys/{patient.pk}"), 403, "keys_not_allowed")
    from messaging import services as messaging_services

    messaging_services.conversation_open_direct(user=patient, peer_id=doctor.pk)
    assert client_for(doctor).get(f"/api/v1/keys/{patient.pk}").status_code == 200
    messaging_services.block_user(user=patient, blocked_id=doctor.pk)
    assert_error(client_for(doctor).get(f"/api/v1/keys/{patient.pk}"), 403, "keys_not_allowed")
    assert_error(client_for(patient).get("/api/v1/keys/999999999"), 404, "user_not_found")
    assert APIClient().get(f"/api/v1/keys/{doctor.pk}").status_code == 401
    assert OneTimePreKey.objects.filter(device__user=patient).count() == 4  # only the allowed fetch took one


def test_bundle_fetches_are_rate_limited(client_for, published, settings):
    rest = dict(settings.REST_FRAMEWORK)
    rest["DEFAULT_THROTTLE_RATES"] = {**rest["DEFAULT_THROTTLE_RATES"], "keys": "3/minute"}
    settings.REST_FRAMEWORK = rest
    patient, doctor, _conversation = pair()
    published(doctor)
    client = client_for(patient)
    assert [client.get(f"/api/v1/keys/{doctor.pk}").status_code for _ in range(3)] == [200] * 3
    assert_error(client.get(f"/api/v1/keys/{doctor.pk}"), 429, "rate_limited")
    assert OneTimePreKey.objects.filter(device__user=doctor).count() == 2


def test_strangers_cannot_drain_one_time_prekeys_but_still_get_bundles(client_for, published, settings):
    """Trust finding 4: a budget per (requester, target) and per target; over it, the bundle
    comes without a one-time prekey (and with the last-resort Kyber key), never an error."""
    settings.HEALTHCHAT_PREKEY_BUDGET_PER_PAIR = 3
    settings.HEALTHCHAT_PREKEY_BUDGET_PER_TARGET = 8
    settings.HEALTHCHAT_PREKEY_BUDGET_WINDOW_SECONDS = 3600
    doctor = DoctorFactory.create()
    device, _identity = published(doctor, one_time=range(1, 21), kyber=range(1, 21), last_resort_id=900)
    strangers = [PatientFactory.create() for _ in range(4)]  # no conversation with the doctor
    taken: list[list[bool]] = []
    for stranger in strangers:
        client = client_for(stranger)
        row = []
        for _ in range(5):
            response = client.get(f"/api/v1/keys/{doctor.pk}")
            assert response.status_code == 200, response.content
            (bundle,) = response.json()["devices"]
            assert bundle["signed_prekey"]["id"] == 1  # the bundle is complete without it
            row.append(bundle["one_time_prekey"] is not None)
            assert (bundle["kyber_prekey"]["last_resort"] is False) == row[-1]
            if not row[-1]:
                assert bundle["kyber_prekey"]["id"] == 900
        taken.append(row)
    # 3 each for the first two, then the doctor's budget (8) is spent: 2 for the third, none after.
    assert taken == [
        [True, True, True, False, False],
        [True, True, True, False, False],
        [True, True, False, False, False],
        [False] * 5,
    ]
    assert OneTimePreKey.objects.filter(device=device).count() == 20 - 8
    assert KyberPreKey.objects.filter(device=device, last_resort=False).count() == 20 - 8
    # The owner's own other devices are not budgeted (they refill their own stock).
    own = client_for(doctor).get(f"/api/v1/keys/{doctor.pk}").json()["devices"][0]
    assert own["one_time_prekey"] is not None


def test_prekey_budget_is_per_target(client_for, published, settings):
    settings.HEALTHCHAT_PREKEY_BUDGET_PER_PAIR = 2
    settings.HEALTHCHAT_PREKEY_BUDGET_PER_TARGET = 100
    patient = PatientFactory.create()
    doctors = [DoctorFactory.create() for _ in range(2)]
    for doctor in doctors:
        published(doctor, one_time=range(1, 6))
    client = client_for(patient)
    for doctor in doctors:  # one requester's budget with one doctor does not touch the other's
        got = [
            client.get(f"/api/v1/keys/{doctor.pk}").json()["devices"][0]["one_time_prekey"] is not None
            for _ in range(3)
        ]
        assert got == [True, True, False]


# --- Events ---------------------------------------------------------------------------------------
@pytest.fixture
def published_events(monkeypatch) -> list[tuple[str, dict[str, Any]]]:
    from core import realtime
    from messaging import services as messaging_services

    events: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(realtime, "publish", lambda group, event: events.append((group, event)))
    for module in (messaging_services.events, messaging_services.contacts):
        monkeypatch.setattr(module, "publish", lambda group, event: events.append((group, event)))
    return events


def test_keys_low_goes_to_the_owning_device_only(
    client_for, published, published_events, settings, django_capture_on_commit_callbacks
):
    settings.HEALTHCHAT_PREKEY_LOW_THRESHOLD = 3
    patient, doctor, _conversation = pair()
    device, _ = published(doctor, one_time=range(1, 5), kyber=range(1, 6))
    with django_capture_on_commit_callbacks(execute=True):
        client_for(patient).get(f"/api/v1/keys/{doctor.pk}")  # 3 left: not below 3
    assert not [e for _g, e in published_events if e["frame"]["type"] == "keys.low"]
    with django_capture_on_commit_callbacks(execute=True):
        client_for(patient).get(f"/api/v1/keys/{doctor.pk}")  # 2 left
    (low,) = [(g, e) for g, e in published_events if e["frame"]["type"] == "keys.low"]
    assert low[0] == f"user.{doctor.pk}"
    assert low[1]["device_id"] == device.pk  # the consumer delivers it to that device only
    assert low[1]["frame"]["data"] == {
        "device_id": device.pk,
        "one_time_prekeys": 2,
        "kyber_prekeys": 3,
        "threshold": 3,
    }


def test_new_identity_key_resets_the_device_and_tells_contacts(
    client_for, published, published_events, django_capture_on_commit_callbacks
):
    patient, doctor, conversation = pair()
    stranger = PatientFactory.create()
    device, _old = published(doctor)
    new = SignalIdentity()
    # A new identity without a full set of keys is refused (the old keys are not its own).
    assert_error(put_keys(client_for(doctor), new.upload(device.pk, full=False)), 422, "keys_incomplete")
    with django_capture_on_commit_callbacks(execute=True):
        response = put_keys(client_for(doctor), new.upload(device.pk, one_time=range(50, 52), kyber=[]))
    assert response.json() == {
        "device_id": device.pk,
        "one_time_prekeys": 2,
        "kyber_prekeys": 0,
        "identity_changed": True,
    }
    assert sorted(OneTimePreKey.objects.filter(device=device).values_list("key_id", flat=True)) == [50, 51]
    assert SignedPreKey.objects.get(device=device).key_id == 1
    assert bytes(DeviceIdentity.objects.get(device=device).identity_key) == new.public_key
    changed = [(g, e["frame"]) for g, e in published_events if e["frame"]["type"] == "identity.changed"]
    assert sorted(g for g, _f in changed) == sorted([f"user.{patient.pk}", f"user.{doctor.pk}"])
    logged = Event.objects.get(conversation=conversation, kind="identity.changed")
    assert changed[0][1] == {
        "type": "identity.changed",
        "data": {"conversation_id": conversation.pk, "user_id": doctor.pk, "device_id": device.pk},
        "event": logged.number,
    }
    assert f"user.{stranger.pk}" not in [g for g, _f in changed]


# --- Concurrency: each one-time key is handed out once --------------------------------------------
def concurrent_fetches(requester: User, owner: User, count: int) -> list[dict[str, Any]]:
    """``count`` bundle fetches of ``owner``'s keys by ``requester`` at the same instant."""
    barrier = threading.Barrier(count)
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def fetch() -> None:
        try:
            barrier.wait(timeout=30)
            (bundle,) = keys.key_bundles_take(requester=requester, user_id=owner.pk)["devices"]
            with lock:
                results.append(bundle)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=fetch) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(results) == count
    return results


@pytest.mark.django_db(transaction=True)
def test_concurrent_fetches_never_share_a_one_time_key(settings):
    """2N concurrent bundle fetches against N one-time prekeys (and N one-time Kyber prekeys):
    N distinct keys, then only the last-resort Kyber key; nothing handed out twice."""
    settings.HEALTHCHAT_PREKEY_BUDGET_PER_PAIR = settings.HEALTHCHAT_PREKEY_BUDGET_PER_TARGET = 1000
    n = 12
    patient, doctor, _conversation = pair()
    device = DeviceFactory.create(user=doctor)
    identity = SignalIdentity()
    keys.device_keys_put(
        user=doctor, **identity.upload(device.pk, one_time=range(1, n + 1), kyber=range(1, n + 1))
    )
    results = concurrent_fetches(patient, doctor, 2 * n)
    one_time = [b["one_time_prekey"]["id"] for b in results if b["one_time_prekey"]]
    assert sorted(one_time) == list(range(1, n + 1))  # each exactly once
    assert sum(1 for b in results if b["one_time_prekey"] is None) == n
    kyber = [b["kyber_prekey"]["id"] for b in results if not b["kyber_prekey"]["last_resort"]]
    assert sorted(kyber) == list(range(1, n + 1))
    assert [b["kyber_prekey"]["id"] for b in results if b["kyber_prekey"]["last_resort"]] == [10_000] * n
    assert not OneTimePreKey.objects.filter(device=device).exists()
    assert KyberPreKey.objects.filter(device=device).count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_fetches_stay_within_the_prekey_budget(settings):
    """24 fetches at once by one requester with a budget of 5: exactly 5 get one-time keys
    (the Redis script counts atomically)."""
    settings.HEALTHCHAT_PREKEY_BUDGET_PER_PAIR = 5
    patient, doctor, _conversation = pair()
    device = DeviceFactory.create(user=doctor)
    keys.device_keys_put(
        user=doctor, **SignalIdentity().upload(device.pk, one_time=range(1, 21), kyber=range(1, 21))
    )
    results = concurrent_fetches(patient, doctor, 24)
    assert sum(1 for b in results if b["one_time_prekey"] is not None) == 5
    assert OneTimePreKey.objects.filter(device=device).count() == 15
