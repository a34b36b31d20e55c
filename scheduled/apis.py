"""Scheduled messages REST API: the author's own only. Thin views."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import request_user
from core.openapi import api_doc
from core.pagination import DefaultCursorPagination

from . import selectors, services
from .serializers import (
    ScheduledCreateInputSerializer,
    ScheduledListQuerySerializer,
    ScheduledOutSerializer,
    ScheduledUpdateInputSerializer,
)

CREATE_ERRORS = {
    400: ["empty_message", "invalid_body", "invalid_send_at", "message_too_long"],
    403: ["scheduling_not_allowed", "consultation_closed"],
    404: ["conversation_not_found"],
    409: ["client_id_reused", "too_many_scheduled"],
    422: ["scheduling_e2ee_unsupported"],
}


class ScheduledListCreateApi(APIView):
    pagination_class = DefaultCursorPagination

    @api_doc(
        "List my scheduled messages",
        parameters=[OpenApiParameter("state", str, enum=["pending", "sent", "failed", "cancelled"])],
        responses=ScheduledOutSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        query = ScheduledListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        rows = selectors.scheduled_list(user=request_user(request), state=query.validated_data.get("state"))
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(rows, request, view=self) or []
        return paginator.get_paginated_response([selectors.scheduled_data(row) for row in page])

    @api_doc(
        "Schedule a message (doctors)",
        errors=CREATE_ERRORS,
        request=ScheduledCreateInputSerializer,
        responses={200: ScheduledOutSerializer, 201: ScheduledOutSerializer},
    )
    def post(self, request: Request) -> Response:
        serializer = ScheduledCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        row, created = services.scheduled_create(author=request_user(request), **serializer.validated_data)
        return Response(
            selectors.scheduled_data(row), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class ScheduledDetailApi(APIView):
    @api_doc(
        "Get a scheduled message",
        errors={404: ["scheduled_message_not_found"]},
        responses=ScheduledOutSerializer,
    )
    def get(self, request: Request, scheduled_id: int) -> Response:
        row = selectors.scheduled_get(user=request_user(request), scheduled_id=scheduled_id)
        return Response(selectors.scheduled_data(row))

    @api_doc(
        "Edit a pending scheduled message",
        errors={
            400: ["empty_message", "invalid_body", "invalid_send_at", "message_too_long"],
            404: ["scheduled_message_not_found"],
            409: ["scheduled_message_not_pending"],
        },
        request=ScheduledUpdateInputSerializer,
        responses=ScheduledOutSerializer,
    )
    def patch(self, request: Request, scheduled_id: int) -> Response:
        serializer = ScheduledUpdateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        row = services.scheduled_update(
            author=request_user(request), scheduled_id=scheduled_id, **serializer.validated_data
        )
        return Response(selectors.scheduled_data(row))

    @api_doc(
        "Cancel a pending scheduled message",
        errors={404: ["scheduled_message_not_found"], 409: ["scheduled_message_not_pending"]},
        responses={200: ScheduledOutSerializer},
    )
    def delete(self, request: Request, scheduled_id: int) -> Response:
        row = services.scheduled_cancel(author=request_user(request), scheduled_id=scheduled_id)
        return Response(selectors.scheduled_data(row))
