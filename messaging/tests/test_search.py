"""Full-text search (``GET /api/v1/search/messages``, ``messaging/search.py``) on the real
PostgreSQL: only what the caller may read, the current text, ranked and highlighted, filters,
keyset pages, one audit row per search without its words; every writer keeps the index."""

from __future__ import annotations

import io
import uuid
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from PIL import Image

from accounts.actors import Operator
from accounts.tests.factories import DoctorFactory, PatientFactory
from audit.models import AuditEntry
from groups import services as group_services
from messaging import batching, search, selectors, services
from messaging.models import Message
from messaging.tests.factories import pair, send_item, send_together

pytestmark = pytest.mark.django_db

URL = "/api/v1/search/messages"


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")


def send(user, conversation_id: int, body: str, *, files: int = 0) -> Message:
    ids = []
    for _ in range(files):
        out = io.BytesIO()
        Image.new("RGB", (40, 40), (0, 120, 0)).save(out, format="PNG")
        attachment = services.attachment_upload(
            uploader=user,
            upload=SimpleUploadedFile("x.png", out.getvalue(), content_type="image/png"),
            name="x.png",
        )
        ids.append(attachment.pk)
    return services.message_send(
        sender=user, conversation_id=conversation_id, client_id=uuid.uuid4(), body=body, attachment_ids=ids
    ).message


def found(api, user, **params: Any) -> list[int]:
    response = api(user).get(URL, params)
    assert response.status_code == 200, response.content
    return [hit["message"]["id"] for hit in response.json()["results"]]


def test_ranked_hits_with_highlighted_snippets(api):
    patient, doctor, conversation = pair()
    weak = send(
        patient, conversation.pk, "I took the tablets yesterday and feel a bit dizzy since the morning"
    )
    strong = send(doctor, conversation.pk, "Dizzy spells: stop the tablets. Dizzy again? Call me.")
    send(patient, conversation.pk, "Thank you, doctor")

    response = api(patient).get(URL, {"q": "dizzy tablets"})

    assert response.status_code == 200, response.content
    body = response.json()
    assert [hit["message"]["id"] for hit in body["results"]] == [strong.pk, weak.pk]
    assert body["next_cursor"] is None
    first = body["results"][0]
    assert first["message"]["body"] == strong.body
    assert first["message"]["conversation_id"] == conversation.pk
    assert first["rank"] > body["results"][1]["rank"] > 0
    assert {"text": "Dizzy", "match": True} in first["snippet"]
    assert {"text": "tablets", "match": True} in first["snippet"]
    assert "".join(s["text"] for s in first["snippet"]) in strong.body
    # Stemming (english): "tablet" finds "tablets"; a phrase and an exclusion.
    assert set(found(api, patient, q="tablet")) == {weak.pk, strong.pk}
    assert found(api, patient, q='"stop the tablets"') == [strong.pk]
    assert found(api, patient, q="tablets -yesterday") == [strong.pk]


def test_only_readable_messages_are_found(api):
    patient, doctor, conversation = pair()
    outsider, _other_doctor, other = pair()
    mine = send(patient, conversation.pk, "wound dressing changed")
    send(outsider, other.pk, "wound dressing changed too")
    # End-to-end encrypted conversations: the server has no text (body empty); never searched.
    e2ee_patient = PatientFactory()
    encrypted, _ = services.conversation_open_direct(user=e2ee_patient, peer_id=doctor.pk, e2ee=True)
    assert encrypted.e2ee

    assert found(api, patient, q="wound") == [mine.pk]
    assert found(api, outsider, q="wound") != [mine.pk]
    assert mine.pk not in found(api, outsider, q="wound")
    assert mine.pk not in found(api, e2ee_patient, q="wound")
    # Another conversation's id as a filter finds nothing (no error that would confirm it exists).
    assert found(api, outsider, q="wound", conversation_id=conversation.pk) == []


def test_history_bounds_of_joins_and_removals():
    owner, p1, p2 = DoctorFactory(), PatientFactory(), PatientFactory()
    for patient in (p1, p2):
        services.conversation_open_direct(user=patient, peer_id=owner.pk)
    group = group_services.group_create(creator=owner, name="Closed", member_ids=[p1.pk])
    before = send(p1, group.pk, "insulin schedule before p2 joined")
    group_services.member_add(actor=owner, group_id=group.pk, user_id=p2.pk)
    during = send(owner, group.pk, "insulin schedule while p2 is in")
    group_services.member_remove(actor=owner, group_id=group.pk, user_id=p2.pk)
    after = send(owner, group.pk, "insulin schedule after p2 left")

    def ids(user) -> set[int]:
        page = search.message_search(user=user, query=search.SearchQuery(text="insulin"))
        return {h.message.pk for h in page.hits}

    assert ids(p1) == {before.pk, during.pk, after.pk}
    assert ids(p2) == {during.pk}  # joined after `before`; removed before `after`


def test_edits_deletions_and_retention_are_followed(api, settings):
    patient, doctor, conversation = pair()
    edited = send(patient, conversation.pk, "my blood pressure is 150")
    deleted = send(patient, conversation.pk, "embarrassing rash photo")
    old = send(doctor, conversation.pk, "old cholesterol result")
    _p2, _d2, held = pair()
    held_old = send(_p2, held.pk, "held cholesterol result")
    services.conversation_set_legal_hold(conversation_id=held.pk, hold=True, actor=Operator(command="test"))
    long_ago = timezone.now() - timedelta(days=400)
    Message.objects.filter(pk__in=[old.pk, held_old.pk]).update(created_at=long_ago)

    services.message_edit(user=patient, message_id=edited.pk, body="my blood sugar is fine now")
    services.message_delete(user=patient, message_id=deleted.pk)

    assert found(api, patient, q="pressure") == []
    assert found(api, patient, q="sugar") == [edited.pk]
    assert found(api, patient, q="rash") == []
    assert found(api, patient, q="cholesterol") == [old.pk]
    settings.MESSAGE_RETENTION_DAYS = 365
    # Past the cutoff: not found even before the retention run erases it; a legal hold keeps it.
    assert found(api, patient, q="cholesterol") == []
    assert found(api, _p2, q="cholesterol") == [held_old.pk]
    services.retention_purge()
    assert Message.objects.get(pk=old.pk).body == ""
    settings.MESSAGE_RETENTION_DAYS = 0
    assert found(api, patient, q="cholesterol") == []


def test_filters(api):
    patient, doctor, conversation = pair()
    group = group_services.group_create(creator=doctor, name="Ward", member_ids=[patient.pk])
    a = send(patient, conversation.pk, "fever report", files=1)
    b = send(doctor, conversation.pk, "fever advice")
    c = send(doctor, group.pk, "fever in the ward")
    Message.objects.filter(pk=a.pk).update(created_at=timezone.now() - timedelta(days=3))

    assert set(found(api, patient, q="fever")) == {a.pk, b.pk, c.pk}
    assert set(found(api, patient, q="fever", conversation_id=conversation.pk)) == {a.pk, b.pk}
    assert set(found(api, patient, q="fever", sender_id=doctor.pk)) == {b.pk, c.pk}
    assert found(api, patient, q="fever", has_attachment="true") == [a.pk]
    assert set(found(api, patient, q="fever", has_attachment="false")) == {b.pk, c.pk}
    since = (timezone.now() - timedelta(days=1)).isoformat()
    assert set(found(api, patient, q="fever", since=since)) == {b.pk, c.pk}
    assert found(api, patient, q="fever", until=since) == [a.pk]
    hit = api(patient).get(URL, {"q": "fever", "has_attachment": "true"}).json()["results"][0]
    assert len(hit["message"]["attachments"]) == 1


def test_keyset_pages_cover_every_hit_once(api):
    patient, doctor, conversation = pair()
    sent = {send(doctor, conversation.pk, "dose " * (1 + i % 4) + f"note {i}").pk for i in range(23)}
    seen: list[int] = []
    ranks: list[float] = []
    cursor = None
    pages = 0
    while True:
        params = {"q": "dose", "limit": 5, **({"cursor": cursor} if cursor else {})}
        body = api(patient).get(URL, params).json()
        seen += [h["message"]["id"] for h in body["results"]]
        ranks += [h["rank"] for h in body["results"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 5
    assert sorted(seen) == sorted(sent)
    assert ranks == sorted(ranks, reverse=True)


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({}, "required"),
        ({"q": "   "}, "invalid_query"),
        ({"q": "x" * 201}, "max_length"),
        ({"q": "a\x01b"}, "invalid_query"),
        ({"q": "dose", "cursor": "garbage!"}, "invalid_cursor"),
        ({"q": "dose", "cursor": "eyJpIjoiMSJ9"}, "invalid_cursor"),  # {"i":"1"}
        ({"q": "dose", "limit": "0"}, "min_value"),
        ({"q": "dose", "has_attachment": "maybe"}, "invalid"),
        ({"q": "dose", "since": "yesterday"}, "invalid"),
    ],
)
def test_bad_input_is_a_400_with_a_code(api, params, code):
    patient, _doctor, _conversation = pair()
    response = api(patient).get(URL, params)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    codes = {error["code"]} | {
        item["code"] if isinstance(item, dict) else item
        for items in (error.get("fields") or {}).values()
        for item in (items if isinstance(items, list) else [items])
    }
    assert code in codes, error


def test_every_search_is_one_audit_row_without_its_words(api):
    patient, _doctor, conversation = pair()
    send(patient, conversation.pk, "secret symptom")
    AuditEntry.objects.all().delete()
    api(patient).get(URL, {"q": "secret symptom"})
    api(patient).get(URL, {"q": "nothing", "conversation_id": conversation.pk})
    rows = list(AuditEntry.objects.filter(action="message.search").order_by("id"))
    assert [(r.actor_id, r.object_type, r.object_id) for r in rows] == [
        (patient.pk, "", ""),
        (patient.pk, "conversation", str(conversation.pk)),
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM audit_auditentry WHERE row_to_json(audit_auditentry)::text ILIKE %s",
            ["%secret%"],
        )
        assert cursor.fetchone()[0] == 0


def test_query_count_is_fixed(django_assert_num_queries):
    patient, doctor, conversation = pair()
    for i in range(8):
        send(doctor, conversation.pk, f"follow-up visit {i}", files=i % 2)
    # One search statement, one for the hits' attachments.
    with django_assert_num_queries(2):
        page = search.message_search(user=patient, query=search.SearchQuery(text="visit", limit=5))
    assert len(page.hits) == 5


def test_a_page_with_its_wire_shape_is_a_fixed_number_of_queries(api):
    """The hits are whole message rows: their wire shape (mentions, reactions, files) reads no
    column lazily, so a page costs the same queries whatever its hits carry (a deferred column
    was one query per hit and per column: 40 of a 20-hit page)."""
    patient, doctor, conversation = pair()
    for i in range(6):
        sent = services.message_send(
            sender=patient,
            conversation_id=conversation.pk,
            client_id=uuid.uuid4(),
            body=f"@Dana about the visit {i}",
            mentions=[{"user_id": doctor.pk, "offset": 0, "length": 5}],
        )
        services.reaction_add(user=doctor, message_id=sent.message.pk, emoji="👍")
    send(doctor, conversation.pk, "visit with files", files=1)

    # The search statement, plus one for the files only when a hit has any; a cursor page too.
    def page_of(query: search.SearchQuery) -> tuple[list[dict[str, Any]], str | None]:
        with CaptureQueriesContext(connection) as captured:
            page = search.message_search(user=patient, query=query)
            wire = [selectors.message_data(h.message, h.attachments) for h in page.hits]
        assert len(captured.captured_queries) == 1 + any(w["attachments"] for w in wire)
        return wire, page.next_cursor

    paged, cursor = page_of(search.SearchQuery(text="visit", limit=3))
    while cursor is not None:
        more, cursor = page_of(search.SearchQuery(text="visit", limit=3, cursor=cursor))
        paged += more
    wire, _ = page_of(search.SearchQuery(text="visit", limit=20))
    assert len(wire) == 7
    assert paged == wire
    mentioned = [w for w in wire if w["mentions"]]
    assert len(mentioned) == 6
    assert all(w["mentions"] == [{"user_id": doctor.pk, "offset": 0, "length": 5}] for w in mentioned)
    assert all(w["reactions"] == [{"emoji": "👍", "count": 1, "user_ids": [doctor.pk]}] for w in mentioned)
    assert [len(w["attachments"]) for w in wire if not w["mentions"]] == [1]

    # Through the view (authentication, throttle, the audit row included): a 1-hit page and a
    # 7-hit page (each with one file) cost the same number of queries.
    def view_queries(**params: Any) -> int:
        client = api(patient)
        with CaptureQueriesContext(connection) as captured:
            response = client.get(URL, params)
        assert response.status_code == 200, response.content
        return len(captured.captured_queries)

    assert view_queries(q="files") == view_queries(q="visit")


@pytest.mark.django_db(transaction=True)
async def test_batched_sends_are_indexed_by_both_writers():
    """The generated column is filled by the send statement itself: the event loop's writer and
    the worker thread's writer (a re-sent client_id makes the loop hand the batch over)."""
    patient, doctor, conversation = await sync_to_async(pair)()
    batcher = batching.SendBatcher()
    await send_together(batcher, [send_item(patient, conversation.pk, f"nausea batch {i}") for i in range(3)])
    assert batcher.loop_writer.batches >= 1
    client_id = uuid.uuid4()
    await send_together(batcher, [send_item(patient, conversation.pk, "nausea once", client_id)])
    handed = batcher.loop_writer.handed_over
    await send_together(
        batcher,
        [
            send_item(patient, conversation.pk, "nausea once", client_id),
            send_item(patient, conversation.pk, "nausea handed over"),
        ],
    )
    assert batcher.loop_writer.handed_over > handed
    page = await sync_to_async(search.message_search)(user=doctor, query=search.SearchQuery(text="nausea"))
    assert len(page.hits) == 5
    assert {h.message.body for h in page.hits} >= {"nausea once", "nausea handed over"}


@pytest.mark.django_db(transaction=True)
def test_language_setting_and_rebuild(settings, api):
    patient, _doctor, conversation = pair()
    message = send(patient, conversation.pk, "running daily")
    assert found(api, patient, q="run") == [message.pk]  # english stems
    settings.SEARCH_LANGUAGE = "simple"
    with pytest.raises(Exception, match="built for english"):
        call_command("search_language", "--check")
    try:
        call_command("search_language")
        assert found(api, patient, q="run") == []  # simple: no stemming
        assert found(api, patient, q="running") == [message.pk]
        call_command("search_language", "--check")
    finally:
        settings.SEARCH_LANGUAGE = "english"
        call_command("search_language")


def test_substring_search_of_databases_without_full_text(api):
    """What ``make run``'s SQLite gets: the same rules through the ORM, a substring match."""
    patient, doctor, conversation = pair()
    a = send(patient, conversation.pk, "Headache since Monday")
    b = send(doctor, conversation.pk, "headache: drink water")
    page = search.substring_search(user=patient, query=search.SearchQuery(text="HEADACHE", limit=1))
    assert [h.message.pk for h in page.hits] == [b.pk]
    assert {"text": "headache", "match": True} in page.hits[0].snippet
    more = search.substring_search(
        user=patient, query=search.SearchQuery(text="headache", limit=1, cursor=page.next_cursor)
    )
    assert [h.message.pk for h in more.hits] == [a.pk]
    assert more.next_cursor is None
