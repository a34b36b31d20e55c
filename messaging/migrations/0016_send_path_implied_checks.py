"""Less PostgreSQL work per message sent (issue 26, round 3, session 10): no database check, lock
or index entry that another guarantee already gives. Each send wrote 8 btree entries and had 4
deferred foreign-key checks at COMMIT (an SPI query each; two of them WAL-logged a tuple lock),
~15 % of PostgreSQL's CPU per message at saturation (docs/benchmarks.md, "Session 10").

Dropped, and what still guarantees what each gave:

- ``messaging_message.conversation_id`` -> conversation and ``messaging_event.conversation_id``
  -> conversation (foreign keys). Every writer of a message or an event numbers it from its
  conversation's row, which it locks and updates in the same transaction (``last_seq`` /
  ``last_event``: the send statement after ``LOCK_BATCH_SQL``'s ``FOR UPDATE``,
  ``services.counters``, ``services.conversations``, retention); that is what makes seq and
  event numbers gapless. A row lock held to COMMIT means the conversation exists when the row
  commits, so the check found it every time, and it took a lock the writer already held.
  Conversations are never deleted (no service deletes one; the admin has no delete
  permission); if one ever is, through Django, ``on_delete=CASCADE`` still deletes its rows.
- ``messaging_event.message_id`` -> message (foreign key) and its index. The send statement
  inserts each ``message.new`` event from the ``RETURNING`` of its message's insert (in the same
  statement, ``services.statements``): no event for a message that was not inserted. The other
  writers (system messages, edits, unsends, retention's ``message.updated``) pass the message
  they created or locked in the same transaction. Messages are never deleted (unsend and
  retention leave tombstones), so no event can lose its message later; Django's CASCADE still
  applies to an ORM delete. The index served only that foreign key (PostgreSQL's check when a
  message is deleted) and Django's cascade: no query reads events by message (sync reads them
  by conversation and number, ``event_number_unique``).

Kept: message -> sender (the sender's row is not locked by the send; the foreign key is what
stops a user with messages from being deleted in the database), message -> reply_to, the
mentions' keys, and every unique and check constraint (gapless seq and idempotent client ids
rest on ``message_seq_unique``, ``message_client_id_unique`` and ``event_number_unique``).

Dropping a foreign key or an index is a catalog change (a short ACCESS EXCLUSIVE lock, no
scan); the reverse migration re-creates and validates them (a scan of each table).
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0015_merge_0014_hot_sends_0014_message_versions"),
    ]

    operations = [
        migrations.AlterField(
            model_name="message",
            name="conversation",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="messages",
                to="messaging.conversation",
            ),
        ),
        migrations.AlterField(
            model_name="event",
            name="conversation",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="events",
                to="messaging.conversation",
            ),
        ),
        migrations.AlterField(
            model_name="event",
            name="message",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="messaging.message",
            ),
        ),
    ]
