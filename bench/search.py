"""Message search benchmark: one user's full-text search over 1,000,000 messages.

``python bench/search.py [--messages 1000000] [--conversations 10000] [--doctors 200]
[--searches 400] [--db-name hc_search_bench] [--keep]`` (from the repository root;
PostgreSQL at ``DATABASE_URL``'s server, default 127.0.0.1:5432 as ``postgres``).

1. Creates (or, with ``--keep`` and an already loaded database, reuses) ``--db-name``, migrates
   it and bulk-loads in SQL (``generate_series``, no ORM round trip per row): ``--doctors``
   doctors and conversations/2 patients; ``--conversations`` direct conversations, each between
   one doctor and one patient (a doctor has conversations/doctors of them, 50 by default; a
   patient 2), and ``--messages`` text messages spread evenly over them (100 each by default),
   written by either member, 6-24 words each drawn from a ~450-word medical vocabulary with a
   Zipf-like frequency (the word of rank r with probability ~1/r: log-uniform ranks), so a query
   may be a word found in most messages of a conversation or in a few of a million.
   The stored tsvector and its GIN index are filled by PostgreSQL as in production
   (``messaging/search_index.py``); then ``VACUUM ANALYZE``.
2. ``--searches`` searches, each by a random user (half doctors, half patients) for a random
   query: one word (common, middling or rare), two words, a "quoted phrase", or one word with a
   filter (a conversation, a sender, a date range), through ``messaging.search.message_search``
   plus the wire shape of every hit (``selectors.message_data``) and the audit row: what
   ``GET /api/v1/search/messages`` runs besides the HTTP layer. A second pass pages to the next
   page with the first page's cursor. Reported: p50/p99/max per kind of user, all searches, and
   the hits per page. The issue's bar: p99 under 50 ms.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench")]

# A medical-chat vocabulary; the word of rank r is drawn with probability ~1/r.
WORDS = """
the i you my is and to it a of for in have not this with be can take that at on do
pain doctor day today morning night dose feel better still take tablet tablets again week
how much after before food water sleep fever headache blood pressure sugar test result
appointment thanks please call tomorrow since yesterday hours minutes twice once daily
evening symptoms cough cold throat chest stomach back leg arm skin rash itch swelling
medicine medication prescription pharmacy refill insulin inhaler antibiotic antibiotics
paracetamol ibuprofen amoxicillin metformin lisinopril atorvastatin omeprazole sertraline
allergy allergic nausea vomiting diarrhoea constipation dizzy dizziness tired fatigue weak
anxiety stress mood depression breathing breath wheezing heart rate pulse temperature
weight diet exercise walking running physio therapy scan xray ultrasound mri report
referral specialist hospital clinic nurse surgery stitches wound dressing infection
swollen bruise sprain fracture cast crutches bandage ointment cream drops spray patch
vaccine vaccination booster flu covid measles tetanus hepatitis shingles pregnancy
pregnant trimester baby feeding breastfeeding formula nappy teething crying colic
cholesterol thyroid kidney liver lungs asthma diabetes hypertension migraine arthritis
eczema psoriasis acne dermatitis insomnia snoring apnoea reflux heartburn ulcer gallstones
appendix hernia bladder urine pee stool bleeding discharge period cramps menopause
contraception pill coil implant smear mammogram biopsy lump cyst mole freckle sunburn
glucose haemoglobin ferritin vitamin iron calcium magnesium potassium sodium zinc folate
dosage overdose missed skipped increase decrease stop start continue switch side effects
rash hives anaphylaxis epipen emergency ambulance urgent routine followup checkup review
numbness tingling tremor seizure fainting palpitations sweating chills shivering aches
joint knee hip shoulder elbow wrist ankle foot toe finger neck spine posture stretching
ear earache hearing tinnitus eye vision glasses contact lenses conjunctivitis stye
tooth toothache dentist gums mouth ulcers tongue jaw sinus congestion sneezing nosebleed
wellbutrin bupropion citalopram fluoxetine propranolol amlodipine ramipril warfarin apixaban
levothyroxine prednisolone hydrocortisone salbutamol beclometasone montelukast cetirizine
loratadine codeine tramadol morphine gabapentin pregabalin naproxen diclofenac aspirin
""".split()  # noqa: SIM905 (a list literal of 400 words is unreadable)

KINDS = ("common", "middling", "rare", "two_words", "phrase", "filtered")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def connect_database(db_name: str, *, keep: bool) -> bool:
    """Point Django at ``db_name``; True when it already holds a loaded data set (``--keep``)."""
    import psycopg

    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    parts = urlsplit(base)
    admin = urlunsplit(parts._replace(path="/postgres"))
    target = urlunsplit(parts._replace(path=f"/{db_name}"))
    loaded = False
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db_name]).fetchone()
        if exists and keep:
            with psycopg.connect(target) as db:
                row = db.execute("SELECT to_regclass('bench_search_loaded')").fetchone()
                loaded = row is not None and row[0] is not None
        if not loaded:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{db_name}"')
    os.environ["DATABASE_URL"] = target
    os.environ["DATABASE_POOL_MAX_SIZE"] = "0"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "healthchat.settings.local")
    return loaded


LOAD_SQL = [
    # Users: doctors first, then patients (ids from a sequence; remembered in a scratch table).
    """
    CREATE TABLE bench_users AS
    WITH made AS (
        INSERT INTO accounts_user (password, is_superuser, role, display_name, is_active, is_staff,
                                   created_at, updated_at)
        SELECT '!', false, CASE WHEN g <= %(doctors)s THEN 'doctor' ELSE 'patient' END,
               'Bench user ' || g, true, false, now(), now()
        FROM generate_series(1, %(doctors)s + %(patients)s) g
        RETURNING id, role
    )
    SELECT id, role, row_number() OVER (PARTITION BY role ORDER BY id) - 1 AS k FROM made
    """,
    # Conversations: number i between doctor i %% doctors and patient i %% patients.
    """
    CREATE TABLE bench_conversations AS
    WITH made AS (
        INSERT INTO messaging_conversation (kind, direct_key, e2ee, name, description,
            history_visible_to_new_members, last_seq, last_event, last_message_at, legal_hold, created_at)
        SELECT 'direct', 'bench:' || g, false, '', '', false, 0, 0, now(), false, now() - interval '400 days'
        FROM generate_series(0, %(conversations)s - 1) g
        RETURNING id, direct_key
    )
    SELECT id, substr(direct_key, 7)::int AS i FROM made
    """,
    """
    CREATE TABLE bench_pairs AS
    SELECT c.id AS conversation_id, c.i, d.id AS doctor_id, p.id AS patient_id
    FROM bench_conversations c
    JOIN bench_users d ON d.role = 'doctor' AND d.k = c.i %% %(doctors)s
    JOIN bench_users p ON p.role = 'patient' AND p.k = c.i %% %(patients)s
    """,
    """
    INSERT INTO messaging_membership (role, joined_at, joined_seq, joined_event, delivered_seq, read_seq,
                                      conversation_id, user_id, visible_after_seq)
    SELECT 'member', now() - interval '400 days', 0, 0, 0, 0, conversation_id, u, 0
    FROM bench_pairs, LATERAL (VALUES (doctor_id), (patient_id)) AS m(u)
    """,
    # Messages: per_conversation each, 6-24 skewed words, over the last year.
    """
    INSERT INTO messaging_message (conversation_id, seq, sender_id, client_id, kind, body, created_at)
    SELECT p.conversation_id, s.seq, CASE WHEN s.seq %% 2 = 0 THEN p.doctor_id ELSE p.patient_id END,
           gen_random_uuid(), 'text',
           (SELECT string_agg((%(words)s::text[])[floor(exp(random() * ln(%(nwords)s + 1)))::int], ' ')
            FROM generate_series(1, 6 + (s.seq * 7 + p.i) %% 19) w),
           now() - (interval '365 days') * (1 - s.seq::float / %(per_conversation)s) - interval '1 minute' * p.i
    FROM bench_pairs p CROSS JOIN generate_series(1, %(per_conversation)s) AS s(seq)
    """,
    """
    UPDATE messaging_conversation c SET last_seq = %(per_conversation)s, last_event = %(per_conversation)s
    WHERE c.id IN (SELECT id FROM bench_conversations)
    """,
    "CREATE TABLE bench_search_loaded (at timestamptz)",
    "INSERT INTO bench_search_loaded VALUES (now())",
]


def load(messages: int, conversations: int, doctors: int) -> None:
    from django.db import connection

    params: dict[str, Any] = {
        "doctors": doctors,
        "patients": conversations // 2,
        "conversations": conversations,
        "per_conversation": messages // conversations,
        "words": WORDS,
        "nwords": len(WORDS),
    }
    started = time.perf_counter()
    with connection.cursor() as cursor:
        for statement in LOAD_SQL:
            step = time.perf_counter()
            cursor.execute(statement, params)
            print(f"  {statement.split()[0:3]} {time.perf_counter() - step:.1f} s", flush=True)
    connection.connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    print(f"loaded in {time.perf_counter() - started:.0f} s", flush=True)


def word_frequencies() -> dict[str, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT word, ndoc FROM ts_stat('SELECT search_vector FROM messaging_message')")
        return dict(cursor.fetchall())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--doctors", type=int, default=200)
    parser.add_argument("--searches", type=int, default=400)
    parser.add_argument("--db-name", default="hc_search_bench")
    parser.add_argument("--keep", action="store_true", help="reuse a database this script loaded before")
    parser.add_argument("--seed", type=int, default=24)
    args = parser.parse_args()

    loaded = connect_database(args.db_name, keep=args.keep)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from accounts.models import User
    from audit import actions as audited
    from audit import services as audit
    from messaging import search, selectors
    from messaging.models import Membership

    # A reused data set is brought up to the code's schema too (a new column, index or setting).
    call_command("migrate", verbosity=0)
    if not loaded:
        load(args.messages, args.conversations, args.doctors)
    else:
        print(f"reusing the data set in {args.db_name}")
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), count(DISTINCT conversation_id) FROM messaging_message")
        total, conversations = cursor.fetchone()
        cursor.execute("SELECT pg_size_pretty(pg_relation_size('message_search_vector'))")
        index_size = cursor.fetchone()[0]
    print(f"{total:,} messages in {conversations:,} conversations; GIN index {index_size}")

    frequencies = word_frequencies()
    by_frequency = sorted(frequencies, key=frequencies.__getitem__, reverse=True)
    third = len(by_frequency) // 3
    pools = {
        "common": by_frequency[5:third],
        "middling": by_frequency[third : 2 * third],
        "rare": by_frequency[2 * third :],
    }
    rng = random.Random(args.seed)
    doctors = list(User.objects.filter(role="doctor").values_list("pk", flat=True))
    patients = list(User.objects.filter(role="patient").values_list("pk", flat=True))

    def make_query(user_id: int, kind: str) -> search.SearchQuery:
        word = rng.choice(
            pools[rng.choice(["common", "middling", "rare"])] if kind not in pools else pools[kind]
        )
        if kind == "two_words":
            return search.SearchQuery(text=f"{word} {rng.choice(pools['common'])}")
        if kind == "phrase":
            return search.SearchQuery(text=f'"{rng.choice(pools["common"])} {word}"')
        if kind == "filtered":
            mine = list(Membership.objects.filter(user_id=user_id).values_list("conversation_id", flat=True))
            choice = rng.randrange(3)
            if choice == 0:
                return search.SearchQuery(text=word, conversation_id=rng.choice(mine))
            if choice == 1:
                return search.SearchQuery(text=word, sender_id=user_id)
            from django.utils import timezone

            return search.SearchQuery(
                text=word, since=timezone.now() - __import__("datetime").timedelta(days=30)
            )
        return search.SearchQuery(text=word)

    searched: list[float] = []  # message_search alone (the statements), first pages

    def run(user: User, query: search.SearchQuery) -> tuple[float, search.SearchPage]:
        started = time.perf_counter()
        page = search.message_search(user=user, query=query)
        searched.append((time.perf_counter() - started) * 1000)
        [selectors.message_data(h.message, h.attachments) for h in page.hits]
        audit.record(audited.MESSAGE_SEARCH, actor=user)
        return (time.perf_counter() - started) * 1000, page

    # Warm-up (connection, caches), not measured.
    for _ in range(20):
        user = User.objects.get(pk=rng.choice(doctors + patients))
        run(user, make_query(user.pk, "common"))

    searched.clear()
    times: dict[str, list[float]] = {"doctor": [], "patient": []}
    by_kind: dict[str, list[float]] = {k: [] for k in KINDS}
    next_pages: list[float] = []
    hits: list[int] = []
    for n in range(args.searches):
        role = "doctor" if n % 2 == 0 else "patient"
        user = User.objects.get(pk=rng.choice(doctors if role == "doctor" else patients))
        kind = KINDS[n % len(KINDS)]
        query = make_query(user.pk, kind)
        elapsed, page = run(user, query)
        times[role].append(elapsed)
        by_kind[kind].append(elapsed)
        hits.append(len(page.hits))
        if page.next_cursor:
            elapsed, _ = run(user, search.SearchQuery(**{**query.__dict__, "cursor": page.next_cursor}))
            next_pages.append(elapsed)

    every = times["doctor"] + times["patient"]
    load1 = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores, load average {load1:.1f} during the run (shared machine)")
    print(f"{'searches':<22}{'n':>6}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    rows = [
        ("all (first pages)", every),
        ("doctor (50 convs)", times["doctor"]),
        ("patient (2 convs)", times["patient"]),
    ]
    rows += [(f"  {kind}", values) for kind, values in by_kind.items()]
    rows += [("next pages (cursor)", next_pages)]
    rows += [("statements only (all)", searched)]  # message_search: no wire shape, no audit row
    for label, values in rows:
        if values:
            print(
                f"{label:<22}{len(values):>6}{statistics.median(values):>10.1f}{pct(values, 0.99):>10.1f}{max(values):>10.1f}"
            )
    print(f"hits per first page: mean {statistics.mean(hits):.1f} (limit {search.LIMIT_DEFAULT})")
    p99 = pct(every, 0.99)
    print(
        f"p50 {statistics.median(every):.1f} ms, p99 {p99:.1f} ms: {'under' if p99 < 50 else 'OVER'} the 50 ms bar"
    )


if __name__ == "__main__":
    main()
