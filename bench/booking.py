"""Booking benchmark: many patients booking few slots at once, and slot listing.

``python bench/booking.py [--patients 1000] [--slots 100] [--threads 32] [--listings 300]
[--db-name hc_booking_bench]`` (from the repository root; PostgreSQL at ``DATABASE_URL``'s
server, default 127.0.0.1:5432 as ``postgres``; Redis at ``REDIS_URL``).

1. Creates (or empties) the database ``--db-name`` on that server and migrates it; seeds one
   verified doctor whose only bookable day has exactly ``--slots`` ten-minute slots, and
   ``--patients`` patients (the development payment provider: every booking is authorised at
   once and confirmed, no money moves).
2. Every patient books at the same moment (a barrier), through the booking service
   (``appointments.services.appointment_book``: the exclusion constraint, the consultation,
   the PaymentIntent, the confirmation), ``--threads`` at a time, each thread with its own
   PostgreSQL connection; patient ``i`` asks for slot ``i % slots``. Reported: outcomes, p50/p99
   latency per booking, and the checks: confirmed appointments == slots, **no two held or
   confirmed appointments of the doctor overlap** (a self-join in SQL), one consultation per
   confirmed appointment.
3. Slot listing: another doctor bookable every day 08:00-18:00 (20 + 5 minutes) with 100 booked
   appointments; ``appointments.selectors.free_slots`` for 30 days (the schedule query, the busy
   query and the computation; what ``GET doctors/{id}/slots`` runs besides the HTTP layer),
   ``--listings`` times: p50/p99. The issue's bar: p99 under 20 ms.

In-process (the service layer, not HTTP): the REST view adds serialization and the request
cycle on top of the same calls.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench")]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def prepare(db_name: str) -> None:
    import psycopg

    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    parts = urlsplit(base)
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{db_name}"')
    os.environ["DATABASE_URL"] = urlunsplit(parts._replace(path=f"/{db_name}"))
    os.environ["DATABASE_POOL_MAX_SIZE"] = "0"  # a connection per thread
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "healthchat.settings.local")
    os.environ["PAYMENTS_PROVIDER"] = "development"
    import logging

    import django

    django.setup()
    logging.getLogger("healthchat").setLevel(logging.WARNING)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=100)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--listings", type=int, default=300)
    parser.add_argument("--db-name", default="hc_booking_bench")
    args = parser.parse_args()

    print(f"preparing {args.db_name} ...", flush=True)
    prepare(args.db_name)

    from django.conf import settings
    from django.db import connection
    from django.utils import timezone

    from accounts.tests.factories import DoctorFactory, PatientFactory
    from appointments import listing, selectors, services
    from appointments import slots as slot_rules
    from appointments.models import Appointment
    from core.errors import ApplicationError
    from payments.models import Consultation

    settings.PAYMENTS_PROVIDER = "development"
    day = (timezone.now() + dt.timedelta(days=3)).date()
    doctor = DoctorFactory.create()
    length = 10
    end_minutes = args.slots * length
    schedule = services.schedule_set(
        doctor=doctor,
        timezone_name="UTC",
        slot_minutes=length,
        buffer_minutes=0,
        min_notice_minutes=0,
        horizon_days=30,
        weekly_hours=[],
        exceptions=[
            {
                "date": day.isoformat(),
                "kind": "extra",
                "start": "00:00",
                "end": f"{end_minutes // 60:02d}:{end_minutes % 60:02d}" if end_minutes < 1440 else "23:59",
            }
        ],
    )
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    slots = [
        s for s, _ in selectors.free_slots(schedule=schedule, start=start, end=start + dt.timedelta(days=1))
    ]
    assert len(slots) == args.slots, (len(slots), args.slots)
    print(f"seeding {args.patients} patients ...", flush=True)
    patients = PatientFactory.create_batch(args.patients)
    connection.close()

    barrier = threading.Barrier(min(args.threads, args.patients))
    latencies: list[float] = []
    outcomes: dict[str, int] = {}
    lock = threading.Lock()
    local = threading.local()

    def book(index: int) -> None:
        if not getattr(local, "started", False):
            local.started = True
            barrier.wait(timeout=120)
        began = time.perf_counter()
        try:
            services.appointment_book(
                patient=patients[index], doctor_id=doctor.pk, starts_at=slots[index % len(slots)], kind="chat"
            )
            outcome = "confirmed"
        except ApplicationError as exc:
            outcome = exc.code
        took = time.perf_counter() - began
        with lock:
            latencies.append(took)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1

    def close_connection() -> None:
        connection.close()

    print(f"booking: {args.patients} patients, {args.slots} slots, {args.threads} threads ...", flush=True)
    wall = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.threads) as pool:
        list(pool.map(book, range(args.patients)))
        list(pool.map(lambda _: close_connection(), range(args.threads)))
    wall = time.perf_counter() - wall

    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT count(*) FROM appointments_appointment a JOIN appointments_appointment b
              ON a.doctor_id = b.doctor_id AND a.id < b.id
             AND tstzrange(a.starts_at, a.ends_at) && tstzrange(b.starts_at, b.ends_at)
             WHERE a.state IN ('held', 'confirmed') AND b.state IN ('held', 'confirmed')
            """
        )
        overlapping = cursor.fetchone()[0]
    confirmed = Appointment.objects.filter(doctor=doctor, state="confirmed").count()
    consultations = Consultation.objects.filter(doctor=doctor).count()
    print(f"outcomes: {dict(sorted(outcomes.items()))}")
    print(f"confirmed appointments: {confirmed} (expected {args.slots})")
    print(f"double-booked pairs: {overlapping}")
    print(f"consultations created: {consultations}")
    ms = [x * 1000 for x in latencies]
    print(
        f"booking latency ms: p50 {pct(ms, 0.5):.1f}  p99 {pct(ms, 0.99):.1f}  max {max(ms):.1f}  "
        f"(wall {wall:.2f} s, {args.patients / wall:.0f} bookings/s)"
    )

    # --- Slot listing over 30 days ------------------------------------------------------------
    other = DoctorFactory.create()
    listed = services.schedule_set(
        doctor=other,
        timezone_name="Europe/London",
        slot_minutes=20,
        buffer_minutes=5,
        min_notice_minutes=0,
        horizon_days=60,
        weekly_hours=[{"weekday": d, "start": "08:00", "end": "18:00"} for d in range(7)],
    )
    now = timezone.now()
    month = selectors.free_slots(schedule=listed, start=now, end=now + dt.timedelta(days=30))
    for patient, (s, e) in zip(patients[:100], month[::5], strict=False):
        Appointment.objects.create(
            doctor=other, patient=patient, kind="chat", starts_at=s, ends_at=e, state="confirmed"
        )
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def listing_run(label: str, one: bool) -> None:
        timings = []
        count = queries = 0
        for _ in range(args.listings):
            began = time.perf_counter()
            with CaptureQueriesContext(connection) as captured:
                if one:  # what GET doctors/{id}/slots runs now (appointments.listing)
                    found = listing.free_slots(doctor_id=other.pk, start=now, end=now + dt.timedelta(days=30))
                else:  # the reference: the schedule, windows, exceptions, doctor and busy queries
                    fresh = selectors.bookable_schedule(doctor_id=other.pk)
                    found = selectors.free_slots(schedule=fresh, start=now, end=now + dt.timedelta(days=30))
            timings.append((time.perf_counter() - began) * 1000)
            count, queries = len(found), len(captured.captured_queries)
        print(
            f"slot listing, 30 days, {label} ({count} free slots, 100 booked, {queries} queries): "
            f"p50 {statistics.median(timings):.2f} ms  p99 {pct(timings, 0.99):.2f} ms  (bar: p99 < 20 ms)"
        )

    listing_run("reference: separate queries", one=False)
    listing_run("one statement (appointments.listing)", one=True)
    rules = selectors.rules_for(listed)
    busy = selectors.busy(doctor_id=other.pk, start=now, end=now + dt.timedelta(days=31))
    compute_ms = []
    for _ in range(args.listings):
        began = time.perf_counter()
        list(slot_rules.compute(rules, start=now, end=now + dt.timedelta(days=30), now=now, busy=busy))
        compute_ms.append((time.perf_counter() - began) * 1000)
    print(
        f"  of which the computation alone: p50 {statistics.median(compute_ms):.2f} ms  "
        f"p99 {pct(compute_ms, 0.99):.2f} ms; the rest is the database"
    )
    print(f"machine load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    ok = confirmed == args.slots and overlapping == 0 and consultations == args.slots
    print("CHECKS", "OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
