"""The statements of a new message, shared by every writer (the loop writer, the thread's batch
writer, the single and encrypted sends): the conversations' locks and the send statement, built
from the registered send checks (``messaging.send_rules.SendCheck``; messaging's own:
``send_checks``)."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

from messaging.send_rules import SendCheck, registry

LOCK_BATCH_SQL = """
SELECT id, kind, direct_key FROM messaging_conversation
WHERE id = ANY(%(ids)s::bigint[]) ORDER BY id FOR UPDATE
"""

# One statement for a whole batch of sends whose conversations are already locked (so this
# statement's snapshot sees every send committed before the locks were granted, and the
# conversations' counters as they are: nobody else can move them while the locks are held): the
# registered send checks per send (``registry.checks``: messaging's own, ``send_checks``; each a
# column of ``checked``); number the accepted ones per conversation in arrival order (gapless)
# from the counters read there; insert messages (with their mention entities, ids taken from
# the sequence up front), events and mention rows; advance the counters and the senders' own
# cursors; return each send's outcome (its message, seq, event number, its conversation's
# members on the first of the conversation's sends, then each check's answer).
#
# ``checked`` is materialized (each check's subquery runs once per send, however often its
# answer is read). Every CTE reads ``checked``, ``numbered`` or ``msg`` alone, never a join of
# two CTEs: the batch writers run the statement with a generic plan, which estimates 10 rows
# for the unnest and a row or two after the checks, and chose nested loops that rescanned one
# CTE per row of another — four of them, 160,000 tuple reads for a batch of 200 (issue 26).
# The events are written from the messages' ``RETURNING``: an event exists only for a message
# this statement inserted, and the conversation of both is the one locked above (which is why
# the database checks no foreign key from either row to the conversation, nor from the event
# to its message: migration 0016). A message that loses its insert to a concurrent one (ON
# CONFLICT) makes every message id of the answer NULL: the writers treat that as a conflict
# and roll back and redo the batch (``BatchConflict``).
SEND_STATEMENT = """
WITH input AS (
    SELECT * FROM unnest(%(ord)s::int[], %(conv)s::bigint[], %(sender)s::bigint[], %(cid)s::uuid[],
                         %(body)s::text[], %(reply)s::bigint[], %(enc)s::bool[], %(ment)s::jsonb[])
                  AS t(ord, conv, sender, cid, body, reply, enc, ment)
), checked AS MATERIALIZED (
    SELECT i.*, c.last_seq AS seq0, c.last_event AS event0, {check_columns}
    FROM input i
    -- the conversation and the sender's membership (on the unique (conversation, user) pair),
    -- at most one row each per send, probed by index: OFFSET 0 keeps each a lateral subquery
    -- the planner cannot flatten into a join. Joined plainly, the generic plan (10 sends
    -- estimated) hashed both tables whole: a scan of every conversation and membership per
    -- execution, half of a one-send execution and growing with the tables (issue 26, session 10)
    JOIN LATERAL (SELECT * FROM messaging_conversation c WHERE c.id = i.conv OFFSET 0) c ON true
    LEFT JOIN LATERAL (SELECT m.id, m.left_at FROM messaging_membership m
                       WHERE m.conversation_id = i.conv AND m.user_id = i.sender OFFSET 0) m ON true
), numbered AS (
    SELECT q.*, q.seq0 + q.k AS seq, q.event0 + q.k AS number,
           CASE WHEN q.passes THEN nextval(pg_get_serial_sequence('messaging_message', 'id')) END AS id
    FROM (
        SELECT c.*, {all_pass} AS passes,
               CASE WHEN {all_pass}
                    THEN count(*) FILTER (WHERE {all_pass}) OVER (PARTITION BY conv ORDER BY ord) END AS k
        FROM checked c
    ) q
), counts AS (
    SELECT conv, count(*) AS n FROM numbered WHERE passes GROUP BY conv
), bumped AS (
    UPDATE messaging_conversation c
    SET last_seq = c.last_seq + counts.n, last_event = c.last_event + counts.n, last_message_at = %(now)s
    -- the batch's ids (the ANY, here and in ``mine``) let the generic plan probe an index
    -- instead of hashing the whole table
    FROM counts WHERE c.id = counts.conv AND c.id = ANY(%(conv)s::bigint[])
), msg AS (
    INSERT INTO messaging_message
        (id, conversation_id, seq, sender_id, client_id, kind, body, system, reply_to_id, created_at, mentions)
    SELECT id, conv, seq, sender, cid, 'text', body, NULL, reply, %(now)s, ment FROM numbered WHERE passes
    ON CONFLICT (sender_id, client_id) DO NOTHING
    RETURNING id, conversation_id, seq
), ev AS (
    -- one event per message this statement inserted (never one for a message that lost its
    -- insert: no foreign key needed to keep event -> message true, see migration 0016); its
    -- number is the seq plus the conversation's events-ahead-of-messages, read in this
    -- statement's snapshot (before ``bumped``): event0 + k = seq0 + k + (event0 - seq0)
    INSERT INTO messaging_event (conversation_id, number, kind, message_id, data, created_at)
    SELECT m.conversation_id,
           m.seq + (SELECT c.last_event - c.last_seq FROM messaging_conversation c WHERE c.id = m.conversation_id),
           'message.new', m.id, NULL, %(now)s
    FROM msg m
), mn AS (
    -- the mentioned members' "mentions of me" rows (messaging.services.mentions), not the sender
    INSERT INTO messaging_mention (message_id, conversation_id, user_id, created_at)
    SELECT DISTINCT n.id, n.conv, (e->>'user_id')::bigint, %(now)s
    FROM numbered n CROSS JOIN LATERAL jsonb_array_elements(n.ment) e
    WHERE n.passes AND n.ment IS NOT NULL AND (e->>'user_id')::bigint <> n.sender
    ON CONFLICT DO NOTHING
), mine AS (
    UPDATE messaging_membership mm
    SET read_seq = GREATEST(mm.read_seq, x.seq), delivered_seq = GREATEST(mm.delivered_seq, x.seq)
    FROM (SELECT conv, sender, max(seq) AS seq FROM numbered WHERE passes GROUP BY conv, sender) x
    WHERE mm.conversation_id = x.conv AND mm.user_id = x.sender AND mm.conversation_id = ANY(%(conv)s::bigint[])
)
SELECT c.ord,
       CASE WHEN c.passes AND (SELECT count(*) FROM msg) = (SELECT count(*) FROM numbered WHERE passes)
            THEN c.id END,
       CASE WHEN c.passes THEN c.seq END, CASE WHEN c.passes THEN c.number END,
       CASE WHEN c.k = 1 THEN (SELECT array_agg(user_id) FROM messaging_membership
                               WHERE conversation_id = c.conv AND left_at IS NULL) END,
       {check_answers}
FROM numbered c
"""

_statements: dict[tuple[tuple[SendCheck, ...], bool], str] = {}


def send_statement(*, single: bool = False) -> str:
    """The send statement with the registered checks (built once per set of checks: the same
    text every time, so the database prepares it once). ``single``: the same statement marked
    by a comment, so the database prepares and plans the single send's apart (a batch's is run
    with a generic plan, ``GENERIC_PLANS_SQL``; a single send's as the planner chooses)."""
    checks = registry.checks
    statement = _statements.get((checks, single))
    if statement is None:
        if not checks:
            raise ImproperlyConfigured("no send checks are registered (MessagingConfig.ready)")
        statement = SEND_STATEMENT.format(
            check_columns=",\n        ".join(f"({c.passes_sql}) AS pass_{n}" for n, c in enumerate(checks)),
            all_pass=" AND ".join(f"pass_{n}" for n in range(len(checks))),
            check_answers=", ".join(f"c.pass_{n}" for n in range(len(checks))),
        )
        if single:
            statement += "-- one send\n"
        _statements[(checks, single)] = statement
    return statement
