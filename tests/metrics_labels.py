"""The allow-list of metric label values (issue 21: bounded cardinality, no user id, phone
number, conversation id or text in any label). ``label_violations(exposition)`` lists every
label value of a scrape that the server did not define itself."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent

METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "other"}


def _routes(patterns: Iterable[Any], prefix: str = "") -> set[str]:
    found: set[str] = set()
    for entry in patterns:
        here = prefix + str(entry.pattern)
        if hasattr(entry, "url_patterns"):
            found |= _routes(entry.url_patterns, here)
        else:
            found.add(here)
    return found


def documented_error_codes() -> set[str]:
    """Every REST error code docs/openapi.yaml documents (the ``code`` enums of the answers)."""
    spec = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            code = (node.get("properties") or {}).get("code")
            if isinstance(code, dict) and isinstance(code.get("enum"), list):
                found.update(str(value) for value in code["enum"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    return found


def allowed() -> dict[str, Callable[[str], bool]]:
    from django.urls import get_resolver

    from core import metrics
    from core.batcher import Batcher
    from core.errors import STATUS_CODES
    from healthchat.celery import app
    from messaging import protocol

    def subclasses(cls: type) -> set[str]:
        names = {cls.__name__}
        for sub in cls.__subclasses__():  # type: ignore[var-annotated]
            names |= subclasses(sub)
        return names

    app.loader.import_default_modules()  # the tasks of every app (autodiscovery is lazy)
    frame_types = set(protocol.CLIENT_FRAMES) | set(protocol.SERVER_FRAMES) | {"ack", "error", "pong"}
    codes = set(protocol.ERROR_CODES) | {code for code, _ in STATUS_CODES.values()} | documented_error_codes()
    routes = _routes(get_resolver().url_patterns) | {"unmatched"}
    sets: dict[str, set[str]] = {
        "type": frame_types | set(metrics.WEBHOOK_TYPES) | {"other"},
        "code": codes,
        "route": routes,
        "method": METHODS,
        "batcher": subclasses(Batcher) | set(metrics.WRITERS),
        "result": {"ok", "failed", *metrics.PUSH_RESULTS},
        "task": set(app.tasks),
        "outcome": set(metrics.WEBHOOK_OUTCOMES),
    }
    checks: dict[str, Callable[[str], bool]] = {name: values.__contains__ for name, values in sets.items()}
    checks["status"] = re.compile(r"[1-5]\d\d").fullmatch  # type: ignore[assignment]
    checks["close_code"] = re.compile(r"[1-4]\d{3}|other").fullmatch  # type: ignore[assignment]
    number = re.compile(r"[+-]?(\d+(\.\d*)?(e[+-]?\d+)?|Inf)").fullmatch
    checks["le"] = number  # type: ignore[assignment]
    checks["quantile"] = number  # type: ignore[assignment]
    return checks


def label_violations(exposition: str) -> list[tuple[str, str, str]]:
    """(metric, label, value) for every label value outside the allow-list."""
    checks = allowed()
    bad = []
    for family in text_string_to_metric_families(exposition):
        if not family.name.startswith("healthchat_"):
            continue
        for sample in family.samples:
            for label, value in sample.labels.items():
                check = checks.get(label)
                if check is None or not check(value):
                    bad.append((sample.name, label, value))
    return bad
