"""Cursor pagination used by every list endpoint (never OFFSET)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request
from rest_framework.views import APIView


def _invalid_cursor(name: str) -> ValidationError:
    return ValidationError({name: ["Not a cursor this server issued."]}, code="invalid_cursor")


class DefaultCursorPagination(CursorPagination):
    """``?limit=`` (1 or more; above ``max_page_size`` it is capped) and ``?cursor=``. A malformed
    limit, or a cursor this server did not issue, is a 400: never ignored, never a 500."""

    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 200
    ordering: str | list[str] | tuple[str, ...] = "-id"

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
            raise ValidationError(
                {
                    self.page_size_query_param: [
                        f"A whole number, 1 or more (at most {self.max_page_size} are given)."
                    ]
                }
            )
        return min(int(raw), self.max_page_size)

    def decode_cursor(self, request: Request) -> Cursor | None:
        raw = request.query_params.get(self.cursor_query_param)
        if raw is None:
            return None
        try:  # DRF's own decoding skips characters outside base64 ("~" reads as the first page)
            if not base64.b64decode(raw.encode("ascii"), validate=True):
                raise ValueError("empty cursor")
            return super().decode_cursor(request)
        except (ValueError, NotFound) as exc:
            raise _invalid_cursor(self.cursor_query_param) from exc

    def paginate_queryset(
        self, queryset: QuerySet[Any, Any] | Sequence[Any], request: Request, view: APIView | None = None
    ) -> list[Any] | None:
        try:
            return super().paginate_queryset(queryset, request, view)
        except (ValueError, TypeError, DjangoValidationError) as exc:
            # A well-formed cursor whose position does not fit the ordering field (forged).
            if request.query_params.get(self.cursor_query_param) is None:
                raise
            raise _invalid_cursor(self.cursor_query_param) from exc

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1}
                parameter["description"] = (
                    f"Page size (default {self.page_size}, at most {self.max_page_size})."
                )
        return parameters
