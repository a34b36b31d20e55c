"""Edit history and moderation on real server processes (uvicorn, real Redis, real PostgreSQL),
driven as clients and staff drive them: WebSocket clients edit and unsend, read the versions
over HTTP; a member reports over HTTP, a moderator signs in to the admin and resolves it there;
the reporter's socket is told, the reported user's socket gets the notice and its sends are
refused (``sender_muted``); a deactivation closes the reported user's socket."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
import requests
from django.contrib.auth.models import Permission

from accounts.models import User
from conftest import unique_phone
from messaging.models import MessageVersion
from messaging.tests.factories import pair
from moderation.models import Report
from tests.wsclient import WsClient

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

LIMITS = {"HEALTHCHAT_WS_RATE": "500", "HEALTHCHAT_WS_BURST": "500"}
PASSWORD = "pw-for-live-tests-only"


@pytest.fixture(scope="module")
def servers(live_server_factory: Any) -> tuple[Any, Any]:
    return live_server_factory(LIMITS), live_server_factory(LIMITS)


def _token(make_token: Any, user: Any) -> str:
    token: str = make_token(uid=user.firebase_uid, phone_number=user.phone_number)
    return token


def _rest(server: Any, make_token: Any, user: User) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {_token(make_token, user)}"
    session.headers["Content-Type"] = "application/json"
    return session


def _staff(*perms: str) -> User:
    user: User = User.objects.create_user(unique_phone(), PASSWORD, is_staff=True, display_name="Moderator")
    for perm in perms:
        app_label, codename = perm.split(".", 1)
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return user


def _admin_session(server: Any, staff: User) -> requests.Session:
    """Signed in to the admin through its login form (CSRF cookie and token, as a browser)."""
    session = requests.Session()
    login_url = f"{server.base_url}/admin/login/"
    session.get(login_url, timeout=10)
    posted = session.post(
        login_url,
        data={
            "username": staff.phone_number,
            "password": PASSWORD,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
            "next": "/admin/",
        },
        timeout=10,
        allow_redirects=False,
    )
    assert posted.status_code == 302, posted.text[:500]
    return session


def _admin_action(server: Any, session: requests.Session, action: str, report_id: int) -> requests.Response:
    queue = f"{server.base_url}/admin/moderation/report/"
    page = session.get(queue, timeout=10)
    assert page.status_code == 200
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token is not None
    return session.post(
        queue,
        data={"action": action, "_selected_action": [str(report_id)], "csrfmiddlewaretoken": token.group(1)},
        headers={"Referer": queue},
        timeout=10,
        allow_redirects=False,
    )


def test_edits_reach_both_processes_with_their_count_and_the_versions_are_readable(
    servers: tuple[Any, Any], make_token: Any
) -> None:
    s1, s2 = servers
    patient, doctor, conversation = pair()

    async def scenario() -> None:
        pat = await WsClient.connect(s1.ws_url, _token(make_token, patient))
        doc = await WsClient.connect(s2.ws_url, _token(make_token, doctor))
        sent = await pat.send_message(conversation.pk, "I take 5 mg")
        message = sent["data"]["message"]
        assert message["edit_count"] == 0
        await doc.expect("message.new")
        for body in ("I take 50 mg", "I take 15 mg"):
            ack = await pat.request("message.edit", {"message_id": message["id"], "body": body})
            assert ack["type"] == "ack", ack
        updates = [await doc.expect("message.updated") for _ in range(2)]
        assert [u["data"]["message"]["edit_count"] for u in updates] == [1, 2]
        assert updates[-1]["data"]["message"]["body"] == "I take 15 mg"

        loop = asyncio.get_running_loop()
        url = f"{s1.base_url}/api/v1/messages/{message['id']}/versions"
        versions = await loop.run_in_executor(
            None, lambda: _rest(s1, make_token, doctor).get(url, timeout=10)
        )
        assert versions.status_code == 200, versions.text
        texts = [(v["version"], v["body"], v["current"]) for v in versions.json()["versions"]]
        assert texts == [(1, "I take 5 mg", False), (2, "I take 50 mg", False), (3, "I take 15 mg", True)]
        history = await loop.run_in_executor(
            None,
            lambda: _rest(s2, make_token, doctor).get(
                f"{s2.base_url}/api/v1/conversations/{conversation.pk}/messages", timeout=10
            ),
        )
        assert history.json()["results"][-1]["edit_count"] == 2

        # Unsend: a tombstone for members, no versions for them; the text is kept.
        ack = await pat.request("message.delete", {"message_id": message["id"]})
        assert ack["type"] == "ack", ack
        tomb = await doc.expect("message.updated")
        assert (tomb["data"]["message"]["deleted"], tomb["data"]["message"]["edit_count"]) == (True, 0)
        after = await loop.run_in_executor(None, lambda: _rest(s1, make_token, doctor).get(url, timeout=10))
        assert (after.json()["deleted"], after.json()["versions"]) == (True, [])
        for client in (pat, doc):
            await client.close()

    asyncio.run(scenario())
    kept = MessageVersion.objects.filter(message__conversation=conversation).order_by("number")
    assert [(v.body, v.reason) for v in kept] == [
        ("I take 5 mg", "edit"),
        ("I take 50 mg", "edit"),
        ("I take 15 mg", "delete"),
    ]


def test_report_resolved_in_the_admin_tells_the_reporter_and_mutes_the_sender(
    servers: tuple[Any, Any], make_token: Any
) -> None:
    s1, s2 = servers
    patient, doctor, conversation = pair()
    moderator = _staff("moderation.view_report", "moderation.moderate_reports")

    async def scenario() -> None:
        pat = await WsClient.connect(s1.ws_url, _token(make_token, patient))
        doc = await WsClient.connect(s2.ws_url, _token(make_token, doctor))
        sent = await doc.send_message(conversation.pk, "something abusive")
        await pat.expect("message.new")
        loop = asyncio.get_running_loop()
        filed = await loop.run_in_executor(
            None,
            lambda: _rest(s1, make_token, patient).post(
                f"{s1.base_url}/api/v1/reports",
                json={
                    "target": "message",
                    "message_id": sent["data"]["message"]["id"],
                    "reason": "abuse",
                    "text": "please look",
                },
                timeout=10,
            ),
        )
        assert filed.status_code == 201, filed.text
        report_id = filed.json()["id"]

        admin = await loop.run_in_executor(None, lambda: _admin_session(s2, moderator))
        taken = await loop.run_in_executor(None, lambda: _admin_action(s2, admin, "assign_to_me", report_id))
        assert taken.status_code == 302
        in_review = await pat.expect("report.updated")
        assert in_review["data"]["report"]["status"] == "in_review"
        muted = await loop.run_in_executor(None, lambda: _admin_action(s2, admin, "resolve_mute", report_id))
        assert muted.status_code == 302

        told = await pat.expect("report.updated")
        assert (told["data"]["report"]["status"], told["data"]["report"]["outcome"]) == ("resolved", "mute")
        notice = await doc.expect("moderation.notice")
        assert notice["data"]["notice"]["action"] == "mute"
        assert notice["data"]["notice"]["muted_until"]
        refused = await doc.send_message(conversation.pk, "more abuse")
        assert (refused["type"], refused["error"]["code"]) == ("error", "sender_muted")
        assert (await doc.request("ping"))["type"] == "pong"  # the socket stays open
        ok = await pat.send_message(conversation.pk, "thank you")
        assert ok["type"] == "ack"
        mine = await loop.run_in_executor(
            None, lambda: _rest(s2, make_token, patient).get(f"{s2.base_url}/api/v1/reports", timeout=10)
        )
        assert [(r["id"], r["outcome"]) for r in mine.json()["results"]] == [(report_id, "mute")]
        for client in (pat, doc):
            await client.close()

    asyncio.run(scenario())
    assert Report.objects.get().resolved_by_id == moderator.pk


def test_a_deactivation_from_the_admin_closes_the_reported_users_socket(
    servers: tuple[Any, Any], make_token: Any
) -> None:
    s1, s2 = servers
    patient, doctor, _conversation = pair()
    report = Report.objects.create(reporter=patient, target="user", reported_user=doctor, reason="harassment")
    deactivator = _staff("moderation.view_report", "accounts.deactivate_account")

    async def scenario() -> None:
        pat = await WsClient.connect(s2.ws_url, _token(make_token, patient))
        doc = await WsClient.connect(s1.ws_url, _token(make_token, doctor))
        loop = asyncio.get_running_loop()
        admin = await loop.run_in_executor(None, lambda: _admin_session(s1, deactivator))
        done = await loop.run_in_executor(
            None, lambda: _admin_action(s1, admin, "resolve_deactivate", report.pk)
        )
        assert done.status_code == 302
        told = await pat.expect("report.updated")
        assert told["data"]["report"]["outcome"] == "deactivate"
        closing = await doc.expect("error")
        assert closing["error"]["code"] == "user_inactive"
        for _ in range(50):
            if doc.close_code is not None:
                break
            await asyncio.sleep(0.1)
        assert doc.close_code is not None
        await pat.close()

    asyncio.run(scenario())
    doctor.refresh_from_db()
    assert doctor.is_active is False
