"""Fewer indexes for every send to update: the single-column indexes on message.conversation,
message.sender and event.conversation duplicate composite constraints that lead with the same
column; message.reply_to is indexed only where set. Only indexes change (no constraint is
dropped and re-validated, as a plain AlterField would do on a large table)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0005_retention_indexes"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    state_operations = [
        migrations.AlterField(
            model_name="event",
            name="conversation",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="events",
                to="messaging.conversation",
            ),
        ),
        migrations.AlterField(
            model_name="message",
            name="conversation",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="messages",
                to="messaging.conversation",
            ),
        ),
        migrations.AlterField(
            model_name="message",
            name="reply_to",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="messaging.message",
            ),
        ),
        migrations.AlterField(
            model_name="message",
            name="sender",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(
                condition=models.Q(("reply_to__isnull", False)), fields=["reply_to"], name="message_reply_to"
            ),
        ),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=state_operations,
            database_operations=[
                migrations.RunSQL(
                    sql=[
                        'DROP INDEX IF EXISTS "messaging_event_conversation_id_59af9d8d"',
                        'DROP INDEX IF EXISTS "messaging_message_conversation_id_3db4d3d1"',
                        'DROP INDEX IF EXISTS "messaging_message_sender_id_7a7088e6"',
                        'DROP INDEX IF EXISTS "messaging_message_reply_to_id_f28e3285"',
                        'CREATE INDEX "message_reply_to" ON "messaging_message" ("reply_to_id")'
                        ' WHERE "reply_to_id" IS NOT NULL',
                    ],
                    reverse_sql=[
                        'DROP INDEX IF EXISTS "message_reply_to"',
                        'CREATE INDEX "messaging_message_reply_to_id_f28e3285" ON "messaging_message" ("reply_to_id")',
                        'CREATE INDEX "messaging_message_sender_id_7a7088e6" ON "messaging_message" ("sender_id")',
                        'CREATE INDEX "messaging_message_conversation_id_3db4d3d1"'
                        ' ON "messaging_message" ("conversation_id")',
                        'CREATE INDEX "messaging_event_conversation_id_59af9d8d" ON "messaging_event" ("conversation_id")',
                    ],
                ),
            ],
        ),
    ]
