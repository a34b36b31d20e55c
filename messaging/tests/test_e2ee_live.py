"""Encrypted delivery on real sockets: each device gets only its own ciphertext, live."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid

import pytest
import requests

from accounts import keys as account_keys
from accounts.models import Device
from accounts.tests.factories import DeviceFactory, DoctorFactory, PatientFactory
from accounts.tests.signal_keys import SignalIdentity
from messaging import services
from tests.wsclient import WsClient

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def server(live_server_factory):
    return live_server_factory(
        {"HEALTHCHAT_WS_RATE": "200", "HEALTHCHAT_WS_BURST": "100", "HEALTHCHAT_PREKEY_LOW_THRESHOLD": "5"}
    )


def token_for(make_token, user):
    return make_token(uid=user.firebase_uid, phone_number=user.phone_number)


def keyed_device(user) -> Device:
    device: Device = DeviceFactory.create(user=user)
    account_keys.device_keys_put(user=user, **SignalIdentity().upload(device.pk))
    return device


def test_each_device_gets_only_its_own_ciphertext(server, make_token):
    patient, doctor = PatientFactory.create(), DoctorFactory.create()
    conversation, _ = services.conversation_open_direct(user=patient, peer_id=doctor.pk, e2ee=True)
    phone, tablet = keyed_device(patient), keyed_device(patient)
    doctor_phone, doctor_tablet = keyed_device(doctor), keyed_device(doctor)
    ciphertexts = {
        str(d.pk): base64.b64encode(os.urandom(64)).decode() for d in (tablet, doctor_phone, doctor_tablet)
    }

    async def scenario():
        sender = await WsClient.connect(server.ws_url, token_for(make_token, patient), device_id=phone.pk)
        own_other = await WsClient.connect(server.ws_url, token_for(make_token, patient), device_id=tablet.pk)
        receivers = {
            d.pk: await WsClient.connect(server.ws_url, token_for(make_token, doctor), device_id=d.pk)
            for d in (doctor_phone, doctor_tablet)
        }
        anonymous = await WsClient.connect(server.ws_url, token_for(make_token, doctor))  # no device

        # A stale device list is refused with the current one.
        stale = {k: v for k, v in ciphertexts.items() if k != str(doctor_tablet.pk)}
        error = await sender.request(
            "message.send",
            {"conversation_id": conversation.pk, "client_id": str(uuid.uuid4()), "ciphertexts": stale},
        )
        assert error["type"] == "error"
        assert error["error"]["code"] == "devices_mismatch"
        assert error["error"]["missing_devices"] == [doctor_tablet.pk]
        assert error["error"]["extra_devices"] == []
        assert {"user_id": doctor.pk, "device_ids": [doctor_phone.pk, doctor_tablet.pk]} in error["error"][
            "devices"
        ]

        plain = await sender.send_message(conversation.pk, "plaintext")
        assert plain["error"]["code"] == "e2ee_required"

        ack = await sender.request(
            "message.send",
            {"conversation_id": conversation.pk, "client_id": str(uuid.uuid4()), "ciphertexts": ciphertexts},
        )
        assert ack["type"] == "ack", ack
        message_id = ack["data"]["message"]["id"]
        assert ack["data"]["message"]["ciphertext"] is None
        for device_id, socket in [*receivers.items(), (tablet.pk, own_other)]:
            got = await socket.expect("message.new")
            assert got["data"]["message"]["id"] == message_id
            assert got["data"]["message"]["ciphertext"] == ciphertexts[str(device_id)]
            assert got["data"]["message"]["body"] == ""
            others = [v for k, v in ciphertexts.items() if k != str(device_id)]
            assert not any(other in str(got) for other in others)
        nothing = await anonymous.expect("message.new")
        assert nothing["data"]["message"]["ciphertext"] is None
        with pytest.raises(TimeoutError):
            await sender.expect("message.new", timeout=0.5)  # the sending socket has the ack

        # sync after reconnecting: the same per-device copy.
        again = await WsClient.connect(
            server.ws_url, token_for(make_token, doctor), device_id=doctor_tablet.pk
        )
        frames, _cursor, _more = await again.sync()
        (replayed,) = [f for f in frames if f["type"] == "message.new"]
        assert replayed["data"]["message"]["ciphertext"] == ciphertexts[str(doctor_tablet.pk)]
        for socket in [sender, own_other, anonymous, again, *receivers.values()]:
            await socket.close()

    asyncio.run(scenario())


def test_keys_low_reaches_only_its_device_and_identity_changes_reach_contacts(server, make_token):
    patient, doctor = PatientFactory.create(), DoctorFactory.create()
    conversation, _ = services.conversation_open_direct(user=patient, peer_id=doctor.pk, e2ee=True)
    doctor_phone, doctor_tablet = keyed_device(doctor), keyed_device(doctor)
    patient_auth = {"Authorization": f"Bearer {token_for(make_token, patient)}"}
    doctor_auth = {"Authorization": f"Bearer {token_for(make_token, doctor)}"}

    async def scenario():
        phone_socket = await WsClient.connect(
            server.ws_url, token_for(make_token, doctor), device_id=doctor_phone.pk
        )
        tablet_socket = await WsClient.connect(
            server.ws_url, token_for(make_token, doctor), device_id=doctor_tablet.pk
        )
        patient_socket = await WsClient.connect(server.ws_url, token_for(make_token, patient))
        url = f"/api/v1/keys/{doctor.pk}?device_id={doctor_phone.pk}"
        loop = asyncio.get_running_loop()
        response = await loop.run_in_executor(
            None, lambda: requests.get(server.base_url + url, headers=patient_auth, timeout=10)
        )
        assert response.status_code == 200, response.content
        low = await phone_socket.expect("keys.low")  # 5 uploaded, 4 left: below 5
        assert low["data"] == {
            "device_id": doctor_phone.pk,
            "one_time_prekeys": 4,
            "kyber_prekeys": 4,
            "threshold": 5,
        }
        with pytest.raises(TimeoutError):
            await tablet_socket.expect("keys.low", timeout=0.5)

        # The doctor reinstalls on the tablet: a new identity key.
        body = SignalIdentity().upload(doctor_tablet.pk)
        response = await loop.run_in_executor(
            None,
            lambda: requests.put(
                server.base_url + "/api/v1/keys", json=body, headers=doctor_auth, timeout=10
            ),
        )
        assert response.status_code == 200
        assert response.json()["identity_changed"] is True
        changed = await patient_socket.expect("identity.changed")
        assert changed["data"] == {
            "conversation_id": conversation.pk,
            "user_id": doctor.pk,
            "device_id": doctor_tablet.pk,
        }
        assert (await phone_socket.expect("identity.changed"))["data"]["device_id"] == doctor_tablet.pk
        for socket in (phone_socket, tablet_socket, patient_socket):
            await socket.close()

    asyncio.run(scenario())


def test_key_changes_reach_a_device_that_was_offline_through_sync(server, make_token):
    """Trust finding 12: ``identity.changed`` and a contact's new device are in the replayable
    event log; a device offline during the change gets them from ``sync``, with the same event
    numbers a device online at the time got live."""
    patient, doctor = PatientFactory.create(), DoctorFactory.create()
    conversation, _ = services.conversation_open_direct(user=patient, peer_id=doctor.pk, e2ee=True)
    phone, tablet = keyed_device(patient), keyed_device(patient)
    doctor_phone = keyed_device(doctor)
    doctor_headers = {"Authorization": f"Bearer {token_for(make_token, doctor)}"}

    def put_keys(body):
        response = requests.put(
            server.base_url + "/api/v1/keys", json=body, headers=doctor_headers, timeout=10
        )
        assert response.status_code == 200, response.content
        return response.json()

    async def scenario():
        offline = await WsClient.connect(server.ws_url, token_for(make_token, patient), device_id=phone.pk)
        _frames, cursor, _more = await offline.sync()
        await offline.close()  # the phone goes offline
        online = await WsClient.connect(server.ws_url, token_for(make_token, patient), device_id=tablet.pk)
        await online.sync()

        loop = asyncio.get_running_loop()
        # The doctor reinstalls on their phone (a new identity key) and adds a tablet.
        changed = await loop.run_in_executor(None, lambda: put_keys(SignalIdentity().upload(doctor_phone.pk)))
        assert changed["identity_changed"] is True
        doctor_tablet = await loop.run_in_executor(None, lambda: DeviceFactory.create(user=doctor))
        await loop.run_in_executor(None, lambda: put_keys(SignalIdentity().upload(doctor_tablet.pk)))

        back = await WsClient.connect(server.ws_url, token_for(make_token, patient), device_id=phone.pk)
        frames, _cursor, more = await back.sync(cursor)
        assert not more
        replayed = [f for f in frames if f["type"] in ("identity.changed", "device.added")]
        assert [(f["type"], f["data"]) for f in replayed] == [
            (
                "identity.changed",
                {"conversation_id": conversation.pk, "user_id": doctor.pk, "device_id": doctor_phone.pk},
            ),
            (
                "device.added",
                {"conversation_id": conversation.pk, "user_id": doctor.pk, "device_id": doctor_tablet.pk},
            ),
        ]
        # The socket that was online got the same entries live, with the same event numbers.
        live = [await online.expect("identity.changed"), await online.expect("device.added")]
        assert live == replayed
        assert replayed[1]["event"] == replayed[0]["event"] + 1
        for socket in (online, back):
            await socket.close()

    asyncio.run(scenario())
