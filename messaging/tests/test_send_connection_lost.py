"""Group commit when the database connection dies inside the batch's transaction: every send of
the batch is refused (an error frame), none is reported as sent while nothing was stored."""

import uuid
from typing import Any

import psycopg
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from messaging import services
from messaging.models import Message
from messaging.tests.factories import pair

pytestmark = pytest.mark.django_db(transaction=True)


class KillInsideSavepoint:
    """An execute wrapper: once a message row has been written in this transaction, terminate
    this connection's backend at the first statement inside the next savepoint."""

    def __init__(self) -> None:
        self.wrote_message = False
        self.armed = False
        self.killed = False

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if self.armed and not self.killed:
            self.killed = True
            self._terminate_own_backend()
        elif self.wrote_message and sql.lstrip().upper().startswith("SAVEPOINT"):
            self.armed = True
        if "INSERT INTO" in sql.upper() and "messaging_message" in sql:
            self.wrote_message = True
        return execute(sql, params, many, context)

    @staticmethod
    def _terminate_own_backend() -> None:
        pid = connection.connection.info.backend_pid
        db = connection.settings_dict
        dsn = f"host={db['HOST']} port={db['PORT']} user={db['USER']} dbname={db['NAME']}"
        with psycopg.connect(dsn, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])


def _conflict(*args: Any, **kwargs: Any) -> None:
    raise services.BatchConflict  # as when a concurrent send takes a client_id of the batch


@pytest.mark.parametrize("path", ["one statement, then a send with a file", "redone send by send"])
def test_a_connection_lost_inside_a_savepoint_never_gives_a_false_ack(path, monkeypatch, settings, tmp_path):
    """A batch of a plain send and a send with a file; the connection dies at the first statement
    of the second savepoint, once a message has been written in the transaction. Either every
    send is refused (the batcher then answers each with an error) or what is reported as sent is
    stored; then the clients send again (same client_id) and each message is stored once."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    if path == "redone send by send":  # the batch is written one savepoint per send
        monkeypatch.setattr(services.send_batch, "_write_batch", _conflict)
    patient, _, first = pair()
    other_patient, _, second = pair()
    upload = SimpleUploadedFile("note.txt", b"a note", content_type="text/plain")
    attachment = services.attachment_upload(uploader=other_patient, upload=upload, name="note.txt")
    items = [
        services.SendRequest(
            sender=patient, conversation_id=first.pk, client_id=str(uuid.uuid4()), body="one"
        ),
        services.SendRequest(
            sender=other_patient,
            conversation_id=second.pk,
            client_id=str(uuid.uuid4()),
            body="two",
            attachment_ids=[attachment.pk],
        ),
    ]
    killer = KillInsideSavepoint()
    try:
        with connection.execute_wrapper(killer):
            try:
                results: list[Any] = services.message_send_many(requests=items)
            except Exception as exc:  # the batcher turns this into an error for every send
                results = [exc] * len(items)
    finally:
        connection.close()
    assert killer.killed
    stored = {str(cid): pk for cid, pk in Message.objects.values_list("client_id", "pk")}
    for item, result in zip(items, results, strict=True):
        if isinstance(result, services.SendResult):
            assert stored.get(item.client_id) == result.message.pk, "reported as sent, not stored"
    # The clients send again what was not acked, with the same client_id.
    again = services.message_send_many(requests=items)
    assert all(isinstance(r, services.SendResult) for r in again), again
    for before, after in zip(results, again, strict=True):
        if isinstance(before, services.SendResult):
            assert after.message.pk == before.message.pk
    assert Message.objects.filter(conversation__in=[first, second]).count() == 2
