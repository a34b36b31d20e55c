"""Full-text search over the messages a caller may read (``GET /api/v1/search/messages``).

What is searched: the current text (edits replace it; deletions and retention blank it) of live
text messages of plaintext conversations, within each of the caller's memberships' visible range
(``visible_after_seq`` < seq <= ``left_seq`` of a former member), and, when
``MESSAGE_RETENTION_DAYS`` is set, not older than the retention cutoff unless the conversation is
under legal hold (a message past the cutoff is erased by the next retention run: search does not
wait for it). End-to-end encrypted conversations are never searched here (the server holds no
text): their clients search their own decrypted store.

PostgreSQL: the stored ``search_vector`` (``messaging/search_index.py``, GIN), the query parsed
with ``websearch_to_tsquery`` (words, "quoted phrases", ``or``, ``-word``), ranked by ``ts_rank``
then id, highlighted by ``ts_headline``, keyset-paginated on (rank, id). Other databases (SQLite
of ``make run``): a case-insensitive substring match, newest first, keyset on id.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from accounts.models import User
from core.errors import ApplicationError

from . import search_index
from .models import Attachment, Membership, Message

QUERY_MAX_LENGTH = 200
LIMIT_DEFAULT = 20
LIMIT_MAX = 50
# ts_headline marks matches with these (message bodies may not contain control characters, so
# they cannot be confused with text); ``snippet_segments`` turns them into segments.
_START, _STOP = "\x02", "\x03"
# One fragment around the best cover (cheaper than MaxFragments: ts_headline re-parses the text).
_HEADLINE_OPTIONS = f"StartSel={_START}, StopSel={_STOP}, MaxWords=24, MinWords=8"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_FALLBACK_WINDOW = 60


@dataclass(frozen=True)
class SearchQuery:
    text: str
    conversation_id: int | None = None
    sender_id: int | None = None
    has_attachment: bool | None = None
    since: datetime | None = None
    until: datetime | None = None
    cursor: str | None = None
    limit: int = LIMIT_DEFAULT


@dataclass
class SearchHit:
    message: Message
    rank: float
    snippet: list[dict[str, Any]]
    attachments: list[Attachment] = field(default_factory=list)


@dataclass
class SearchPage:
    hits: list[SearchHit] = field(default_factory=list)
    next_cursor: str | None = None


def validate_query_text(value: str) -> str:
    text = " ".join(str(value).split())
    if not text:
        raise ApplicationError("invalid_query", "Give the words to search for.", fields={"q": ["blank"]})
    if len(text) > QUERY_MAX_LENGTH or _CONTROL.search(text):
        raise ApplicationError(
            "invalid_query",
            f"A search has at most {QUERY_MAX_LENGTH} printable characters.",
            fields={"q": ["invalid"]},
        )
    return text


def _encode_cursor(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode_cursor(raw: str, *, ranked: bool) -> tuple[float, int]:
    def bad() -> ApplicationError:
        return ApplicationError(
            "invalid_cursor", "Not a cursor this server issued.", fields={"cursor": ["invalid_cursor"]}
        )

    if not raw.isascii() or len(raw) > 200:
        raise bad()
    try:
        payload = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise bad() from exc
    if not isinstance(payload, dict):
        raise bad()
    message_id, rank = payload.get("i"), payload.get("r", 0.0)
    if isinstance(message_id, bool) or not isinstance(message_id, int) or not 0 < message_id < 2**63:
        raise bad()
    if ranked and (isinstance(rank, bool) or not isinstance(rank, int | float) or not 0 <= rank < 1e30):
        raise bad()
    return float(rank), message_id


def snippet_segments(headline: str) -> list[dict[str, Any]]:
    """``"take your \\x02dose\\x03 at"`` → ``[{"text": "take your ", "match": false}, ...]``."""
    segments: list[dict[str, Any]] = []
    for part in re.split(f"({_START}[^{_STOP}]*{_STOP})", headline):
        if not part:
            continue
        if part.startswith(_START) and part.endswith(_STOP):
            segments.append({"text": part[1:-1], "match": True})
        else:
            segments.append({"text": part.replace(_START, "").replace(_STOP, ""), "match": False})
    return segments


def _retention_cutoff() -> datetime | None:
    days = int(getattr(settings, "MESSAGE_RETENTION_DAYS", 0) or 0)
    return timezone.now() - timedelta(days=days) if days > 0 else None


def message_search(*, user: User, query: SearchQuery) -> SearchPage:
    """One page of the caller's hits, best first."""
    text = validate_query_text(query.text)
    limit = max(1, min(query.limit, LIMIT_MAX))
    if connection.vendor == "postgresql":
        return _search_postgresql(user, query, text, limit)
    return substring_search(user=user, query=query)


def _attachments_of(message_ids: list[int]) -> dict[int, list[Attachment]]:
    """The hits' files in one query, none when no hit has any (the common page)."""
    out: dict[int, list[Attachment]] = {}
    if message_ids:
        for attachment in Attachment.objects.filter(message_id__in=message_ids).order_by("id"):
            out.setdefault(attachment.message_id or 0, []).append(attachment)
    return out


# --- PostgreSQL -----------------------------------------------------------------------------
# One branch per size of text (``search_index``): the short messages from the covering index
# alone, the long ones through their own index and their rows; the same conditions in both.
_BRANCH_SQL = """
        SELECT m.id, ts_rank(m.{column}, q.query) AS rank
        FROM readable r
        JOIN messaging_message m
            ON m.conversation_id = r.conversation_id AND m.seq > r.lower AND m.seq <= r.upper
        CROSS JOIN q
        WHERE m.deleted_at IS NULL AND m.kind = 'text' AND octet_length(m.body) {size}
          AND m.{column} @@ q.query {filters}"""

_SEARCH_SQL = """
WITH q AS (
    SELECT websearch_to_tsquery(%(config)s::regconfig, %(q)s) AS query
), readable AS (
    SELECT mm.conversation_id, mm.visible_after_seq AS lower, COALESCE(mm.left_seq, 9223372036854775807) AS upper,
           c.legal_hold
    FROM messaging_membership mm JOIN messaging_conversation c ON c.id = mm.conversation_id
    WHERE mm.user_id = %(user)s AND NOT c.e2ee {conversation_filter}
), hits AS (
    SELECT id, rank FROM (
        {short_branch}
        UNION ALL
        {long_branch}
    ) found
    ORDER BY rank DESC, id DESC
    LIMIT %(limit)s
)
SELECT {message_columns}, h.rank,
       ts_headline(%(config)s::regconfig, m.body, q.query, %(headline)s) AS headline,
       EXISTS (SELECT 1 FROM messaging_attachment a WHERE a.message_id = m.id) AS has_files
FROM hits h JOIN messaging_message m ON m.id = h.id CROSS JOIN q
ORDER BY h.rank DESC, h.id DESC
"""


def _message_columns() -> str:
    """Every column of the message row, so the hits are whole ``Message`` objects: a column left
    out of a raw query is a deferred field, loaded by ONE query PER HIT when the wire shape
    (``selectors.message_data``) reads it (``mentions`` and ``reactions`` were: 2 queries a hit,
    40 of a doctor's 20-hit page, ~20 ms)."""
    columns = [f.column for f in Message._meta.concrete_fields if f.column]
    return ", ".join(f"m.{connection.ops.quote_name(column)}" for column in columns)


def _filters(query: SearchQuery, params: dict[str, Any], *, ranked: bool) -> tuple[str, str]:
    conversation_filter = ""
    clauses: list[str] = []
    if query.conversation_id is not None:
        conversation_filter = "AND mm.conversation_id = %(conversation)s"
        params["conversation"] = query.conversation_id
    if query.sender_id is not None:
        clauses.append("m.sender_id = %(sender)s")
        params["sender"] = query.sender_id
    if query.since is not None:
        clauses.append("m.created_at >= %(since)s")
        params["since"] = query.since
    if query.until is not None:
        clauses.append("m.created_at < %(until)s")
        params["until"] = query.until
    if query.has_attachment is not None:
        exists = "EXISTS (SELECT 1 FROM messaging_attachment a WHERE a.message_id = m.id)"
        clauses.append(exists if query.has_attachment else f"NOT {exists}")
    cutoff = _retention_cutoff()
    if cutoff is not None:
        clauses.append("(r.legal_hold OR m.created_at >= %(cutoff)s)")
        params["cutoff"] = cutoff
    if query.cursor is not None:
        rank, message_id = _decode_cursor(query.cursor, ranked=ranked)
        clauses.append(
            f"(ts_rank(m.{search_index.COLUMN}, q.query), m.id) < (%(after_rank)s::real, %(after_id)s)"
        )
        params["after_rank"], params["after_id"] = rank, message_id
    return conversation_filter, "".join(f" AND {c}" for c in clauses)


def _search_postgresql(user: User, query: SearchQuery, text: str, limit: int) -> SearchPage:
    params: dict[str, Any] = {
        "config": search_index.language(),
        "q": text,
        "user": user.pk,
        "limit": limit + 1,
        "headline": _HEADLINE_OPTIONS,
    }
    conversation_filter, filters = _filters(query, params, ranked=True)
    branches = {
        name: _BRANCH_SQL.format(column=search_index.COLUMN, size=size, filters=filters)
        for name, size in (
            ("short_branch", f"<= {search_index.SHORT_BODY_BYTES}"),
            ("long_branch", f"> {search_index.SHORT_BODY_BYTES}"),
        )
    }
    sql = _SEARCH_SQL.format(
        conversation_filter=conversation_filter, message_columns=_message_columns(), **branches
    )
    rows = list(Message.objects.raw(sql, params))
    more = len(rows) > limit
    rows = rows[:limit]
    files = _attachments_of([m.pk for m in rows if getattr(m, "has_files")])  # noqa: B009
    hits = [
        SearchHit(
            message=m,
            rank=float(getattr(m, "rank")),  # noqa: B009
            snippet=snippet_segments(getattr(m, "headline")),  # noqa: B009
            attachments=files.get(m.pk, []),
        )
        for m in rows
    ]
    next_cursor = _encode_cursor({"r": hits[-1].rank, "i": hits[-1].message.pk}) if more else None
    return SearchPage(hits=hits, next_cursor=next_cursor)


# --- Other databases: a substring match ----------------------------------------------------
def _readable(user: User, conversation_id: int | None) -> Q:
    memberships = Membership.objects.filter(user=user, conversation__e2ee=False)
    if conversation_id is not None:
        memberships = memberships.filter(conversation_id=conversation_id)
    cutoff = _retention_cutoff()
    readable = Q(pk__in=[])
    for conv_id, lower, upper, held in memberships.values_list(
        "conversation_id", "visible_after_seq", "left_seq", "conversation__legal_hold"
    ):
        one = Q(conversation_id=conv_id, seq__gt=lower)
        if upper is not None:
            one &= Q(seq__lte=upper)
        if cutoff is not None and not held:
            one &= Q(created_at__gte=cutoff)
        readable |= one
    return readable


def _substring_snippet(body: str, words: list[str]) -> list[dict[str, Any]]:
    lowered = body.casefold()
    spans: list[tuple[int, int]] = []
    for word in words:
        start = lowered.find(word)
        while start >= 0 and word:
            spans.append((start, start + len(word)))
            start = lowered.find(word, start + len(word))
    spans.sort()
    first = spans[0][0] if spans else 0
    begin, end = max(0, first - _FALLBACK_WINDOW), min(len(body), first + 2 * _FALLBACK_WINDOW)
    segments: list[dict[str, Any]] = []
    at = begin
    for start, stop in spans:
        if start < at or stop > end:
            continue
        if start > at:
            segments.append({"text": body[at:start], "match": False})
        segments.append({"text": body[start:stop], "match": True})
        at = stop
    if at < end:
        segments.append({"text": body[at:end], "match": False})
    return segments


def substring_search(*, user: User, query: SearchQuery) -> SearchPage:
    """The search of databases without full-text search: every word as a case-insensitive
    substring, newest first (no rank), the same readable range and filters."""
    text = validate_query_text(query.text)
    limit = max(1, min(query.limit, LIMIT_MAX))
    words = [w.strip('"').casefold() for w in text.split() if w.strip('"-')]
    qs = Message.objects.filter(_readable(user, query.conversation_id), deleted_at__isnull=True, kind="text")
    for word in words:
        qs = qs.filter(body__icontains=word)
    if query.sender_id is not None:
        qs = qs.filter(sender_id=query.sender_id)
    if query.since is not None:
        qs = qs.filter(created_at__gte=query.since)
    if query.until is not None:
        qs = qs.filter(created_at__lt=query.until)
    if query.has_attachment is not None:
        with_files = Exists(Attachment.objects.filter(message_id=OuterRef("pk")))
        qs = qs.filter(with_files if query.has_attachment else ~with_files)
    if query.cursor is not None:
        qs = qs.filter(pk__lt=_decode_cursor(query.cursor, ranked=False)[1])
    rows = list(qs.order_by("-pk")[: limit + 1])
    more = len(rows) > limit
    files = _attachments_of([m.pk for m in rows[:limit]])
    hits = [
        SearchHit(
            message=m, rank=0.0, snippet=_substring_snippet(m.body, words), attachments=files.get(m.pk, [])
        )
        for m in rows[:limit]
    ]
    return SearchPage(hits=hits, next_cursor=_encode_cursor({"i": hits[-1].message.pk}) if more else None)
