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
    busy: Iterable[tuple[dt.datetime, dt.datetime]] = (),
) -> Iterator[tuple[dt.datetime, dt.datetime]]:
    """Free slots (UTC start, end) starting in ``[start, end)``, inside the notice and horizon
    limits, not overlapping ``busy`` (held or confirmed appointments), in time order."""
    tz = zoneinfo.ZoneInfo(rules.timezone)
    length = dt.timedelta(minutes=rules.slot_minutes)
    step = length + dt.timedelta(minutes=rules.buffer_minutes)
    earliest = max(start, now + dt.timedelta(minutes=rules.min_notice_minutes))
    latest = min(end, now + dt.timedelta(days=rules.horizon_days))
    if earliest >= latest:
        return
    taken = sorted(busy)
    # Local dates that can hold a slot starting in [earliest, latest): one day either side
    # covers every UTC offset.
    day = earliest.astimezone(tz).date() - dt.timedelta(days=1)
    last = latest.astimezone(tz).date() + dt.timedelta(days=1)
    found: list[tuple[dt.datetime, dt.datetime]] = []
    while day <= last:
        for w_start, w_end in _windows(rules, day, tz):
            at = w_start
            while at + length <= w_end:
                if earliest <= at < latest and not any(b_s < at + length and at < b_e for b_s, b_e in taken):
                    found.append((at, at + length))
                at += step
        day += dt.timedelta(days=1)
    yield from sorted(set(found))
