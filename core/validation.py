"""Glue so the per-app ``validators.py`` functions serve DRF serializers too."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, ClassVar

from django.http import QueryDict
from django.utils import timezone
from rest_framework import serializers
from rest_framework.fields import empty

from .errors import ApplicationError


def drf(fn: Callable[[Any], Any]) -> Callable[[Any], None]:
    """Wrap a domain validator as a DRF field validator (same rule, same code)."""

    def _validate(value: Any) -> None:
        try:
            fn(value)
        except ApplicationError as exc:
            raise serializers.ValidationError(exc.message, code=exc.code) from exc

    _validate.__name__ = getattr(fn, "__name__", "validator")
    return _validate


def _json_type_problem(field: serializers.Field[Any, Any, Any, Any], value: Any) -> str | None:
    """Why ``value`` (decoded JSON) is not of the JSON type ``field`` documents, or None.

    DRF coerces across types (``12`` into the string ``"12"``, ``"true"`` into ``True``,
    ``"7"`` into ``7``); a JSON API refuses them instead, as its schema says.
    """
    if value is None:
        return None  # allow_null is the field's own rule
    if isinstance(field, serializers.BooleanField):
        return None if isinstance(value, bool) else "Expected a boolean."
    if isinstance(field, serializers.IntegerField):
        return None if isinstance(value, int) and not isinstance(value, bool) else "Expected an integer."
    if isinstance(field, serializers.FloatField | serializers.DecimalField):
        return (
            None if isinstance(value, int | float) and not isinstance(value, bool) else "Expected a number."
        )
    if isinstance(
        field,
        serializers.CharField
        | serializers.DateField
        | serializers.DateTimeField
        | serializers.TimeField
        | serializers.DurationField,
    ):
        return None if isinstance(value, str) else "Expected a string."
    if isinstance(field, serializers.ChoiceField) and all(isinstance(c, str) for c in field.choices):
        return None if isinstance(value, str) else "Expected a string."
    if isinstance(field, serializers.ListField):
        if not isinstance(value, list):
            return "Expected a list."
        return next((p for p in (_json_type_problem(field.child, v) for v in value) if p), None)
    return None


class StrictSerializer(serializers.Serializer[Any]):
    """Refuses fields it does not declare (unknown or read-only), instead of ignoring them, and
    (for JSON bodies) values of another JSON type than the field's, instead of coercing them."""

    json_types = True
    # The domain code a field's own refusal is answered with, by DRF's code, e.g.
    # ``{"reason": {"invalid_choice": "invalid_reason"}}``: that ``ApplicationError`` (``fields``
    # naming the field) instead of ``invalid``, so a client gets the code the docs and the service
    # give for a rule whichever layer checks it. (Not in the docstring: the schema shows that.)
    field_codes: ClassVar[Mapping[str, Mapping[str, str]]] = {}

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {
                        name: [serializers.ErrorDetail("Unknown or read-only field.", code="unknown_field")]
                        for name in unknown
                    }
                )
            if self.json_types:
                wrong = {
                    name: problem
                    for name, field in self.fields.items()
                    if name in data and (problem := _json_type_problem(field, data[name]))
                }
                if wrong:
                    raise serializers.ValidationError(
                        {name: [serializers.ErrorDetail(p, code="wrong_type")] for name, p in wrong.items()}
                    )
        try:
            return super().to_internal_value(data)
        except serializers.ValidationError as exc:
            coded = self.coded(exc)
            if coded is None:
                raise
            raise coded from exc

    def coded(self, exc: serializers.ValidationError) -> ApplicationError | None:
        """The domain error ``field_codes`` names for the first coded field refusal in ``exc``."""
        if not self.field_codes or not isinstance(exc.detail, dict):
            return None
        for name, problems in exc.detail.items():
            codes = self.field_codes.get(str(name), {})
            for problem in problems if isinstance(problems, list) else []:
                code = codes.get(getattr(problem, "code", None) or "")
                if code is not None:
                    return ApplicationError(code, str(problem), fields={str(name): [code]})
        return None


class QuerySerializer(serializers.Serializer[Any]):
    """Query-string parameters read as plain values (the last of a repeated one), not with
    HTML-form rules, under which ``?limit=`` would mean "not given" and a missing boolean false:
    an empty value for a number or a boolean is refused. Values are strings: no JSON types."""

    json_types = False

    def __init__(self, instance: Any = None, data: Any = empty, **kwargs: Any) -> None:
        if isinstance(data, QueryDict):
            data = data.dict()
        super().__init__(instance, data, **kwargs)


class OffsetDateTimeField(serializers.DateTimeField):
    """A date-time that must carry its UTC offset: a naive one is refused (DRF code ``naive``;
    map it to the domain's code with ``StrictSerializer.field_codes``) instead of being read in
    the server's time zone."""

    def enforce_timezone(self, value: datetime) -> datetime:
        if timezone.is_naive(value):
            raise serializers.ValidationError("A time with its UTC offset is required.", code="naive")
        return super().enforce_timezone(value)
