"""The full-text index of plaintext messages (PostgreSQL only): its DDL, in one place.

``messaging_message.search_vector`` is a stored generated column,
``to_tsvector(<SEARCH_LANGUAGE>, body)``, with a GIN index. PostgreSQL computes it on every
INSERT and UPDATE of ``body``, whoever writes (the batched send statement, the ORM, edits,
deletions and retention, which blank the body): no writer has to remember it. The column is not
a model field (the ORM never reads or writes it; SQLite, used by ``make run``, has no
``to_tsvector``): the migration adds it on PostgreSQL only and ``messaging/search.py`` reads it in
raw SQL. The language is fixed in the column's expression: ``manage.py search_language`` rebuilds
the column after ``SEARCH_LANGUAGE`` changes.
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

COLUMN = "search_vector"
INDEX = "message_search_vector"
# A user's search walks their own conversations' messages in a btree index alone (an
# index-only scan: the tsvector, id, sender and time are in it; no heap page per message),
# checking each tsvector: a few thousand entries in key order beat a GIN posting list of a
# common word over every conversation. A btree entry holds at most ~2.7 kB and a tsvector takes
# up to ~3.4 bytes per byte of text, so the covering index holds the messages of at most
# SHORT_BODY_BYTES (nearly all chat messages); the longer ones have a plain index of their own
# (their heap rows are read). The GIN index serves the planner when a user reads very many.
SHORT_BODY_BYTES = 600
COVERING_INDEX = "message_search_short"
LONG_INDEX = "message_search_long"
_LIVE_TEXT = "deleted_at IS NULL AND kind = 'text'"
# New entries of the GIN index wait in its pending list until it holds this many kB, then the
# inserting statement merges them into the index. At PostgreSQL's default (4 MB, ~20,000
# messages) that merge held one send statement ~35-45 ms every ~40 s at 500 msgs/s (a p99
# spike); at 256 kB it is ~1,200 messages and 2-3 ms (issue 26, docs/benchmarks.md).
GIN_PENDING_LIST_KB = 256
_CONFIG_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def language() -> str:
    """The text search configuration (``english``, ``simple``, ``german``...) from settings."""
    name = str(settings.SEARCH_LANGUAGE)
    if not _CONFIG_NAME.match(name):
        raise ImproperlyConfigured(f"SEARCH_LANGUAGE must be a text search configuration name, not {name!r}")
    return name


def add_statements(config: str) -> list[str]:
    """Add the column (computed for every existing row: a table rewrite) and its index."""
    if not _CONFIG_NAME.match(config):
        raise ImproperlyConfigured(f"not a text search configuration name: {config!r}")
    return [
        f"ALTER TABLE messaging_message ADD COLUMN {COLUMN} tsvector "
        f"GENERATED ALWAYS AS (to_tsvector('{config}'::regconfig, body)) STORED",
        f"CREATE INDEX {INDEX} ON messaging_message USING gin ({COLUMN}) "
        f"WITH (gin_pending_list_limit = {GIN_PENDING_LIST_KB})",
        f"CREATE INDEX {COVERING_INDEX} ON messaging_message (conversation_id, seq) "
        f"INCLUDE (id, sender_id, created_at, {COLUMN}) "
        f"WHERE {_LIVE_TEXT} AND octet_length(body) <= {SHORT_BODY_BYTES}",
        f"CREATE INDEX {LONG_INDEX} ON messaging_message (conversation_id, seq) "
        f"WHERE {_LIVE_TEXT} AND octet_length(body) > {SHORT_BODY_BYTES}",
    ]


def drop_statements() -> list[str]:
    return [
        f"DROP INDEX IF EXISTS {LONG_INDEX}",
        f"DROP INDEX IF EXISTS {COVERING_INDEX}",
        f"DROP INDEX IF EXISTS {INDEX}",
        f"ALTER TABLE messaging_message DROP COLUMN IF EXISTS {COLUMN}",
    ]


def current_config(cursor: Any) -> str | None:
    """The configuration the column is built with now (None: no column)."""
    cursor.execute(
        """
        SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a
        JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attrelid = 'messaging_message'::regclass AND a.attname = %s AND NOT a.attisdropped
        """,
        [COLUMN],
    )
    row = cursor.fetchone()
    if row is None:
        return None
    found = re.search(r"'([a-z_][a-z0-9_]*)'::regconfig", row[0])
    return found.group(1) if found else None


def config_exists(cursor: Any, config: str) -> bool:
    cursor.execute("SELECT 1 FROM pg_ts_config WHERE cfgname = %s", [config])
    return cursor.fetchone() is not None
