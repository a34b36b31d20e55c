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
# statement's snapshot sees every send committed before the locks were granted): the registered
# send checks per send (``registry.checks``: messaging's own, ``send_checks``; each a column of
# ``checked``); number the accepted ones per conversation in arrival order (gapless); insert
# messages (with their mention entities), events and mention rows; advance the senders' own cursors; return each send's outcome (its
# message, seq, event number, its conversation's members on the first of the conversation's
# sends, then each check's answer) and each conversation's recipients.
SEND_STATEMENT = """
WITH input AS (
    SELECT * FROM unnest(%(ord)s::int[], %(conv)s::bigint[], %(sender)s::bigint[], %(cid)s::uuid[],
                         %(body)s::text[], %(reply)s::bigint[], %(enc)s::bool[], %(ment)s::jsonb[])
                  AS t(ord, conv, sender, cid, body, reply, enc, ment)
), checked AS (
    SELECT i.*, {check_columns}
    FROM input i JOIN messaging_conversation c ON c.id = i.conv
    -- the sender's membership joined on the unique (conversation, user) pair: at most one row
    -- per send, probed by index (an EXISTS here was planned as a hash of every active
    -- membership when the statistics were stale: work growing with the table, per batch)
    LEFT JOIN messaging_membership m ON m.conversation_id = i.conv AND m.user_id = i.sender
), ok AS (
    SELECT ord, conv, sender, cid, body, reply, ment, row_number() OVER (PARTITION BY conv ORDER BY ord) AS k
    FROM checked WHERE {all_pass}
), counts AS (
    SELECT conv, count(*) AS n FROM ok GROUP BY conv
), bumped AS (
    UPDATE messaging_conversation c
    SET last_seq = c.last_seq + counts.n, last_event = c.last_event + counts.n, last_message_at = %(now)s
    FROM counts WHERE c.id = counts.conv
    RETURNING c.id, c.last_seq - counts.n AS seq0, c.last_event - counts.n AS event0
), numbered AS (
    SELECT ok.*, b.seq0 + ok.k AS seq, b.event0 + ok.k AS number FROM ok JOIN bumped b ON b.id = ok.conv
), msg AS (
    INSERT INTO messaging_message
        (conversation_id, seq, sender_id, client_id, kind, body, system, reply_to_id, created_at, mentions)
    SELECT conv, seq, sender, cid, 'text', body, NULL, reply, %(now)s, ment FROM numbered
    ON CONFLICT (sender_id, client_id) DO NOTHING
    RETURNING id, conversation_id, seq
), ev AS (
    INSERT INTO messaging_event (conversation_id, number, kind, message_id, data, created_at)
    SELECT n.conv, n.number, 'message.new', m.id, NULL, %(now)s
    FROM msg m JOIN numbered n ON n.conv = m.conversation_id AND n.seq = m.seq
), mn AS (
    -- the mentioned members' "mentions of me" rows (messaging.services.mentions), not the sender
    INSERT INTO messaging_mention (message_id, conversation_id, user_id, created_at)
    SELECT DISTINCT m.id, n.conv, (e->>'user_id')::bigint, %(now)s
    FROM msg m JOIN numbered n ON n.conv = m.conversation_id AND n.seq = m.seq
    CROSS JOIN LATERAL jsonb_array_elements(n.ment) e
    WHERE n.ment IS NOT NULL AND (e->>'user_id')::bigint <> n.sender
    ON CONFLICT DO NOTHING
), mine AS (
    UPDATE messaging_membership mm
    SET read_seq = GREATEST(mm.read_seq, x.seq), delivered_seq = GREATEST(mm.delivered_seq, x.seq)
    FROM (SELECT conv, sender, max(seq) AS seq FROM numbered GROUP BY conv, sender) x
    WHERE mm.conversation_id = x.conv AND mm.user_id = x.sender
), rcpt AS (
    SELECT conversation_id AS conv, array_agg(user_id) AS users FROM messaging_membership
    WHERE conversation_id IN (SELECT conv FROM counts) AND left_at IS NULL GROUP BY conversation_id
)
SELECT c.ord, m.id, n.seq, n.number, CASE WHEN n.k = 1 THEN r.users END, {check_answers}
FROM checked c
LEFT JOIN numbered n ON n.ord = c.ord
LEFT JOIN msg m ON m.conversation_id = n.conv AND m.seq = n.seq
LEFT JOIN rcpt r ON r.conv = c.conv
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
