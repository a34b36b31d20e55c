"""Slots, computed from a schedule (never stored).

A window is wall-clock time in the doctor's zone on one local date (``09:00-17:00`` every
Monday); its two ends are placed on the time line with ``zoneinfo`` for that date, and slots
are laid end to end from its start in elapsed time (``slot + buffer`` apart) while a whole slot
still fits before its end. So a window keeps its wall-clock hours across a DST change, and a
window that spans the change itself (a night clinic) is an hour shorter or longer that night.
A wall-clock end that does not exist (in a spring-forward gap) resolves with ``fold=0``, as
``zoneinfo`` does. ``off`` exceptions remove their span (or the whole date); ``extra`` ones
add a window on their date.
"""

from __future__ import annotations

import bisect
import datetime as dt
import zoneinfo
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

UTC = dt.UTC


@dataclass(frozen=True)
class Rules:
    timezone: str
    slot_minutes: int
    buffer_minutes: int
    horizon_days: int
    min_notice_minutes: int
    weekly: tuple[tuple[int, dt.time, dt.time], ...]
    exceptions: tuple[tuple[dt.date, str, dt.time | None, dt.time | None], ...] = ()


def _epoch(value: dt.datetime | float) -> float:
    return value if isinstance(value, float) else value.timestamp()


def _instant(day: dt.date, at: dt.time, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(day, at, tzinfo=tz).astimezone(UTC)


def _windows(rules: Rules, day: dt.date, tz: zoneinfo.ZoneInfo) -> list[tuple[dt.datetime, dt.datetime]]:
    spans = [(s, e) for weekday, s, e in rules.weekly if weekday == day.weekday()]
    offs: list[tuple[dt.datetime, dt.datetime]] = []
    for date, kind, start, end in rules.exceptions:
        if date != day:
            continue
        if kind == "extra" and start is not None and end is not None:
            spans.append((start, end))
        elif kind == "off":
            if start is None or end is None:
                return []
            offs.append((_instant(day, start, tz), _instant(day, end, tz)))
    out = [(_instant(day, s, tz), _instant(day, e, tz)) for s, e in spans]
    return [(s, e) for s, e in out if s < e] if not offs else _subtract(out, offs)


def _subtract(
    spans: list[tuple[dt.datetime, dt.datetime]], offs: list[tuple[dt.datetime, dt.datetime]]
) -> list[tuple[dt.datetime, dt.datetime]]:
    for off_start, off_end in offs:
        kept: list[tuple[dt.datetime, dt.datetime]] = []
        for s, e in spans:
            if off_end <= s or off_start >= e:
                kept.append((s, e))
                continue
            if s < off_start:
                kept.append((s, off_start))
            if off_end < e:
                kept.append((off_end, e))
        spans = kept
    return [(s, e) for s, e in spans if s < e]


def compute(
    rules: Rules,
    *,
    start: dt.datetime,
    end: dt.datetime,
    now: dt.datetime,
    busy: Iterable[tuple[dt.datetime, dt.datetime] | tuple[float, float]] = (),
) -> Iterator[tuple[dt.datetime, dt.datetime]]:
    """Free slots (UTC start, end) starting in ``[start, end)``, inside the notice and horizon
    limits, not overlapping ``busy`` (held or confirmed appointments, as datetimes or as epoch
    seconds), in time order."""
    tz = zoneinfo.ZoneInfo(rules.timezone)
    # Integer seconds since the epoch inside the loop (datetime arithmetic is the cost here).
    length = rules.slot_minutes * 60
    step = length + rules.buffer_minutes * 60
    earliest_dt = max(start, now + dt.timedelta(minutes=rules.min_notice_minutes))
    latest_dt = min(end, now + dt.timedelta(days=rules.horizon_days))
    if earliest_dt >= latest_dt:
        return
    earliest, latest = earliest_dt.timestamp(), latest_dt.timestamp()
    # Busy intervals sorted by start, with the running maximum of their ends: a slot [a, b)
    # overlaps one of them exactly when the latest end among those starting before b is after a.
    taken = sorted((_epoch(b_s), _epoch(b_e)) for b_s, b_e in busy)
    starts = [b_s for b_s, _ in taken]
    max_end: list[float] = []
    for _, b_e in taken:
        max_end.append(max(max_end[-1], b_e) if max_end else b_e)
    # Local dates that can hold a slot starting in [earliest, latest): one day either side
    # covers every UTC offset.
    day = earliest_dt.astimezone(tz).date() - dt.timedelta(days=1)
    last = latest_dt.astimezone(tz).date() + dt.timedelta(days=1)
    found: set[float] = set()
    while day <= last:
        for w_start, w_end in _windows(rules, day, tz):
            at, stop = w_start.timestamp(), w_end.timestamp()
            while at + length <= stop:
                if earliest <= at < latest:
                    before = bisect.bisect_left(starts, at + length)
                    if before == 0 or max_end[before - 1] <= at:
                        found.add(at)
                at += step
        day += dt.timedelta(days=1)
    span = dt.timedelta(seconds=length)
    for at in sorted(found):
        begin = dt.datetime.fromtimestamp(at, UTC)
        yield begin, begin + span
