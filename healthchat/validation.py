"""Glue so the per-app ``validators.py`` functions serve DRF serializers too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rest_framework import serializers

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


class StrictSerializer(serializers.Serializer[Any]):
    """Refuses fields it does not declare (unknown or read-only), instead of ignoring them."""

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
        return super().to_internal_value(data)
