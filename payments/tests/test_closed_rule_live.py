"""The consultation's closed rule on a real server (uvicorn, PostgreSQL, Redis, real sockets):
once the follow-up window is over, nothing the patient writes reaches the doctor, on any path
(send, attachment, edit, typing, call, a group created with the doctor, the doctor added to a
group, a group message or rename); the doctor still reaches the patient; inside the window
every path works.

``test_closed_rule_coverage.py`` names these tests as the proof for each guarded frame and
REST operation.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import uuid
from typing import Any

import pytest
import requests
from django.utils import timezone
from PIL import Image

from accounts.models import User
from accounts.tests.factories import DoctorFactory
from calls.tests.conftest import SDP_OFFER
from groups import services as group_services
from messaging import selectors as messaging_selectors
from messaging import services as messaging
from payments.models import Consultation
from payments.tests.factories import completed, people, requested
from tests.wsclient import WsClient

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

LIVE_ENV = {"HEALTHCHAT_WS_RATE": "500", "HEALTHCHAT_WS_BURST": "500"}
QUIET = 0.4  # anything misrouted would have arrived by now (same process, loopback)


@pytest.fixture(scope="module")
def server(live_server_factory: Any) -> Any:
    return live_server_factory(LIVE_ENV)


@pytest.fixture
def consulted(stripe_fake: Any) -> tuple[User, User, Consultation]:
    """A patient and a doctor with a completed consultation (inside its follow-up window)."""
    patient, doctor = people()
    return patient, doctor, completed(patient, doctor, stripe_fake)


def close(consultation: Consultation) -> None:
    """The follow-up window ends."""
    Consultation.objects.filter(pk=consultation.pk).update(closes_at=timezone.now() - dt.timedelta(minutes=1))


def token(make_token: Any, user: User) -> str:
    return str(make_token(uid=user.firebase_uid, phone_number=user.phone_number))


def rest(server: Any, make_token: Any, user: User, method: str, path: str, **kwargs: Any) -> Any:
    return requests.request(
        method,
        f"{server.base_url}/api/v1/{path}",
        headers={"Authorization": f"Bearer {token(make_token, user)}"},
        timeout=10,
        **kwargs,
    )


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 40, 40)).save(out, format="PNG")
    return out.getvalue()


async def nothing_arrives(client: WsClient, *types: str) -> None:
    """No frame of ``types`` reaches ``client`` (waits QUIET seconds for stragglers)."""
    await asyncio.sleep(QUIET)
    while True:
        try:
            client.inbox.append(await client.recv(timeout=0.1))
        except TimeoutError:
            break
    arrived = [f for f in client.inbox if f.get("type") in types]
    assert not arrived, arrived


def refused(reply: dict[str, Any]) -> None:
    assert reply["type"] == "error", reply
    assert reply["error"]["code"] == "consultation_closed", reply


def send_data(conversation_id: int, body: str, **extra: Any) -> dict[str, Any]:
    return {"conversation_id": conversation_id, "client_id": str(uuid.uuid4()), "body": body, **extra}


def test_message_send_refused_for_the_patient_and_allowed_for_the_doctor(
    server: Any, make_token: Any, consulted: Any
) -> None:
    patient, doctor, consultation = consulted
    conversation_id = consultation.conversation_id
    close(consultation)

    async def scenario() -> None:
        p = await WsClient.connect(server.ws_url, token(make_token, patient))
        d = await WsClient.connect(server.ws_url, token(make_token, doctor))
        refused(await p.send_message(conversation_id, "too late"))
        await nothing_arrives(d, "message.new")
        ok = await d.send_message(conversation_id, "the doctor still writes")
        assert ok["type"] == "ack", ok
        got = await p.expect("message.new")
        assert got["data"]["message"]["body"] == "the doctor still writes"
        await p.close()
        await d.close()

    asyncio.run(scenario())


def test_attachment_refused(server: Any, make_token: Any, consulted: Any) -> None:
    patient, doctor, consultation = consulted
    conversation_id = consultation.conversation_id
    close(consultation)
    uploaded = rest(
        server, make_token, patient, "POST", "attachments", files={"file": ("scan.png", png(), "image/png")}
    )
    assert uploaded.status_code == 201, uploaded.text
    attachment_id = uploaded.json()["id"]

    async def scenario() -> None:
        p = await WsClient.connect(server.ws_url, token(make_token, patient))
        d = await WsClient.connect(server.ws_url, token(make_token, doctor))
        refused(
            await p.request("message.send", send_data(conversation_id, "", attachment_ids=[attachment_id]))
        )
        await nothing_arrives(d, "message.new")
        await p.close()
        await d.close()

    asyncio.run(scenario())


def test_edit_of_an_old_message_refused(server: Any, make_token: Any, consulted: Any) -> None:
    patient, doctor, consultation = consulted
    conversation_id = consultation.conversation_id
    old = messaging.message_send(
        sender=patient, conversation_id=conversation_id, client_id=uuid.uuid4(), body="inside the window"
    )
    mine = messaging.message_send(
        sender=doctor, conversation_id=conversation_id, client_id=uuid.uuid4(), body="doctor's note"
    )
    close(consultation)

    async def scenario() -> None:
        p = await WsClient.connect(server.ws_url, token(make_token, patient))
        d = await WsClient.connect(server.ws_url, token(make_token, doctor))
        refused(await p.request("message.edit", {"message_id": old.message.pk, "body": "new words"}))
        await nothing_arrives(d, "message.updated")
        ok = await d.request(
            "message.edit", {"message_id": mine.message.pk, "body": "doctor's note, amended"}
        )
        assert ok["type"] == "ack", ok
        assert (await p.expect("message.updated"))["data"]["message"]["body"] == "doctor's note, amended"
        await p.close()
        await d.close()

    asyncio.run(scenario())
    old.message.refresh_from_db()
    assert old.message.body == "inside the window"


def test_reaction_refused_and_the_doctor_may_still_react(
    server: Any, make_token: Any, consulted: Any
) -> None:
    """A reaction is the patient's content in front of the doctor (issue 24): refused after the
    window closes, on the socket and over REST; the doctor may still react."""
    patient, doctor, consultation = consulted
    conversation_id = consultation.conversation_id
    note = messaging.message_send(
        sender=doctor, conversation_id=conversation_id, client_id=uuid.uuid4(), body="doctor's note"
    )
    question = messaging.message_send(
        sender=patient, conversation_id=conversation_id, client_id=uuid.uuid4(), body="a question"
    )
    close(consultation)

    async def scenario() -> None:
        p = await WsClient.connect(server.ws_url, token(make_token, patient))
        d = await WsClient.connect(server.ws_url, token(make_token, doctor))
        refused(await p.request("reaction.add", {"message_id": note.message.pk, "emoji": "🙏"}))
        await nothing_arrives(d, "reaction.added")
        ok = await d.request("reaction.add", {"message_id": question.message.pk, "emoji": "👍"})
        assert ok["type"] == "ack", ok
        assert (await p.expect("reaction.added"))["data"]["user_id"] == doctor.pk
        await p.close()
        await d.close()

    asyncio.run(scenario())
    over_rest = rest(
        server, make_token, patient, "POST", f"messages/{note.message.pk}/reactions", json={"emoji": "🙏"}
    )
    assert over_rest.status_code == 403
    assert over_rest.json()["error"]["code"] == "consultation_closed"
    note.message.refresh_from_db()
    assert note.message.reactions is None


def test_typing_refused(server: Any, make_token: Any, consulted: Any) -> None:
    patient, doctor, consultation = consulted
    conversation_id = consultation.conversation_id
    close(consultation)

    async def scenario() -> None:
        p = await WsClient.connect(server.ws_url, token(make_token, patient))
        d = await WsClient.connect(server.ws_url, token(make_token, doctor))
        refused(await p.request("typing", {"conversation_id": conversation_id, "active": True}))
        await nothing_arrives(d, "typing")
        await d.send("typing", {"conversation_id": conversation_id, "active": True})
        assert (await p.expect("typing"))["data"]["user_id"] == doctor.pk
        await p.close()
        await d.close()

    asyncio.run(scenario())


def test_call_invite_refused_and_the_doctor_may_still_call(
    server: Any, make_token: Any, consulted: Any
) -> None:
    patient, doctor, consultation = consulted
    conversation_id = consultation.conversation_id
    close(consultation)

    async def scenario() -> None:
        p = await WsClient.connect(server.ws_url, token(make_token, patient))
        d = await WsClient.connect(server.ws_url, token(make_token, doctor))
        invite = {"conversation_id": conversation_id, "media": "audio", "sdp": SDP_OFFER}
        refused(await p.request("call.invite", invite))
        await nothing_arrives(d, "call.invite")
        ok = await d.request("call.invite", invite)
        assert ok["type"] == "ack", ok
        assert (await p.expect("call.invite"))["data"]["call"]["id"] == ok["data"]["call"]["id"]
        await p.close()
        await d.close()

    asyncio.run(scenario())


def test_group_created_with_the_doctor_refused(server: Any, make_token: Any, consulted: Any) -> None:
    patient, doctor, consultation = consulted
    close(consultation)
    friend = DoctorFactory.create()  # another doctor (a patient may contact any verified doctor)

    async def scenario() -> None:
        d = await WsClient.connect(server.ws_url, token(make_token, doctor))
        answer = await asyncio.to_thread(
            rest,
            server,
            make_token,
            patient,
            "POST",
            "groups",
            json={"name": "please read this", "member_ids": [doctor.pk, friend.pk]},
        )
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["code"] == "consultation_closed"
        await nothing_arrives(d, "member.added", "message.new")
        await d.close()

    asyncio.run(scenario())
    assert not messaging_selectors.shares_conversation(user_id=doctor.pk, other_id=friend.pk)
    # The doctor may still bring the patient into a group.
    group = group_services.group_create(creator=doctor, name="Follow-up", member_ids=[patient.pk])
    assert group.pk


def test_doctor_added_to_the_patients_group_refused(server: Any, make_token: Any, consulted: Any) -> None:
    patient, doctor, consultation = consulted
    friend = DoctorFactory.create()  # another doctor (a patient may contact any verified doctor)
    group = group_services.group_create(creator=patient, name="Family", member_ids=[friend.pk])
    close(consultation)

    async def scenario() -> None:
        d = await WsClient.connect(server.ws_url, token(make_token, doctor))
        answer = await asyncio.to_thread(
            rest,
            server,
            make_token,
            patient,
            "POST",
            f"groups/{group.pk}/members",
            json={"user_id": doctor.pk},
        )
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["code"] == "consultation_closed"
        await nothing_arrives(d, "member.added", "message.new")
        await d.close()

    asyncio.run(scenario())


def test_group_message_and_rename_refused_in_a_group_with_the_doctor(
    server: Any, make_token: Any, consulted: Any
) -> None:
    """A group the patient made with the doctor inside the window: after it, the patient's
    messages and renames would reach the doctor; refused. The doctor still writes there."""
    patient, doctor, consultation = consulted
    friend = DoctorFactory.create()  # another doctor (a patient may contact any verified doctor)
    group = group_services.group_create(creator=patient, name="Family", member_ids=[doctor.pk, friend.pk])
    close(consultation)

    async def scenario() -> None:
        p = await WsClient.connect(server.ws_url, token(make_token, patient))
        d = await WsClient.connect(server.ws_url, token(make_token, doctor))
        refused(await p.send_message(group.pk, "to everyone, the doctor too"))
        answer = await asyncio.to_thread(
            rest, server, make_token, patient, "PATCH", f"groups/{group.pk}", json={"name": "read me, doctor"}
        )
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["code"] == "consultation_closed"
        await nothing_arrives(d, "message.new", "group.updated")
        ok = await d.send_message(group.pk, "the doctor still writes here")
        assert ok["type"] == "ack", ok
        assert (await p.expect("message.new"))["data"]["message"]["body"] == "the doctor still writes here"
        await p.close()
        await d.close()

    asyncio.run(scenario())


def test_inside_the_window_every_path_works(server: Any, make_token: Any, consulted: Any) -> None:
    patient, doctor, consultation = consulted
    conversation_id = consultation.conversation_id
    friend = DoctorFactory.create()  # another doctor (a patient may contact any verified doctor)

    async def scenario() -> None:
        p = await WsClient.connect(server.ws_url, token(make_token, patient))
        d = await WsClient.connect(server.ws_url, token(make_token, doctor))
        sent = await p.send_message(conversation_id, "inside the window")
        assert sent["type"] == "ack", sent
        edited = await p.request(
            "message.edit", {"message_id": sent["data"]["message"]["id"], "body": "edited"}
        )
        assert edited["type"] == "ack", edited
        await p.send("typing", {"conversation_id": conversation_id, "active": True})
        assert (await d.expect("typing"))["data"]["user_id"] == patient.pk
        invite = {"conversation_id": conversation_id, "media": "audio", "sdp": SDP_OFFER}
        call = await p.request("call.invite", invite)
        assert call["type"] == "ack", call
        await d.expect("call.invite")
        created = await asyncio.to_thread(
            rest,
            server,
            make_token,
            patient,
            "POST",
            "groups",
            json={"name": "Family", "member_ids": [doctor.pk, friend.pk]},
        )
        assert created.status_code == 201, created.text
        group_id = created.json()["id"]
        await d.expect("member.added", lambda f: f["data"]["message"]["conversation_id"] == group_id)
        group_sent = await p.send_message(group_id, "hello all")
        assert group_sent["type"] == "ack", group_sent
        await d.expect("message.new", lambda f: f["data"]["message"]["body"] == "hello all")
        await p.close()
        await d.close()

    asyncio.run(scenario())


def test_a_new_consultation_opens_every_path_again(server: Any, make_token: Any, consulted: Any) -> None:
    patient, doctor, consultation = consulted
    conversation_id = consultation.conversation_id
    close(consultation)
    requested(patient, doctor)  # a new consultation: the patient may write again

    async def scenario() -> None:
        p = await WsClient.connect(server.ws_url, token(make_token, patient))
        d = await WsClient.connect(server.ws_url, token(make_token, doctor))
        invite = {"conversation_id": conversation_id, "media": "video", "sdp": SDP_OFFER}
        call = await p.request("call.invite", invite)
        assert call["type"] == "ack", call
        await d.expect("call.invite")
        await p.close()
        await d.close()

    asyncio.run(scenario())
