"""Full-text search over plaintext messages (PostgreSQL only): a stored generated tsvector of
``body`` in ``SEARCH_LANGUAGE`` and its GIN index (``messaging/search_index.py``). Adding the
column rewrites ``messaging_message`` once (an ACCESS EXCLUSIVE lock for the rewrite); SQLite
gets nothing (search there is a plain substring match)."""

from django.db import migrations

from messaging import search_index


def add(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for statement in search_index.add_statements(search_index.language()):
        schema_editor.execute(statement)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for statement in search_index.drop_statements():
        schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0010_event_device_kinds"),
    ]

    operations = [migrations.RunPython(add, drop)]
