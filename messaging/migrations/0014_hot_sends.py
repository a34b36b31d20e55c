"""Less PostgreSQL work per message sent (issue 26), PostgreSQL only (SQLite gets the index change).

- ``messaging_membership``: no single-column index on ``conversation_id`` (``membership_unique``
  leads with it and answers every query by conversation).
- ``fillfactor`` on the two tables every send updates in place (the conversation's counters,
  the sender's cursors): room left in each page, so the new row version goes in the same page
  (a HOT update: no index entry, less WAL) instead of a new page with an entry in each of the
  table's indexes. Applies to pages written from now on; ``VACUUM FULL`` (or ``pg_repack``)
  repacks old ones.
- the search GIN index's pending list flushed at 256 kB instead of 4 MB
  (``search_index.GIN_PENDING_LIST_KB``): a merge of ~1,200 messages' entries (2-3 ms) instead
  of ~20,000 (35-45 ms inside one send statement).
"""

import django.db.models.deletion
from django.db import migrations, models

from messaging import search_index

FILLFACTORS = {"messaging_conversation": 50, "messaging_membership": 70}


def set_fillfactors(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table, fillfactor in FILLFACTORS.items():
        schema_editor.execute(f"ALTER TABLE {table} SET (fillfactor = {fillfactor})")
    schema_editor.execute(
        f"ALTER INDEX IF EXISTS {search_index.INDEX} SET (gin_pending_list_limit = {search_index.GIN_PENDING_LIST_KB})"
    )


def reset_fillfactors(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in FILLFACTORS:
        schema_editor.execute(f"ALTER TABLE {table} RESET (fillfactor)")
    schema_editor.execute(f"ALTER INDEX IF EXISTS {search_index.INDEX} RESET (gin_pending_list_limit)")


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0013_merge_annotations_search"),
    ]

    operations = [
        migrations.AlterField(
            model_name="membership",
            name="conversation",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="memberships",
                to="messaging.conversation",
            ),
        ),
        migrations.RunPython(set_fillfactors, reset_fillfactors),
    ]
