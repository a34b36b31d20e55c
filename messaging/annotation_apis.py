"""REST of reactions, pins and "mentions of me" (issue 24). Thin views: one service or selector
call each; the socket frames do the same through the same services."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import request_user
from audit import actions as audited
from audit import services as audit
from core.openapi import api_doc
from core.pagination import DefaultCursorPagination

from . import annotation_selectors, selectors, services
from .annotation_serializers import (
    PinChangeOutSerializer,
    ReactionChangeOutSerializer,
    ReactionInputSerializer,
)
from .serializers import MentionOutSerializer

_REACTION_ERRORS = {
    400: ["invalid_reaction"],
    403: ["blocked", "consultation_closed"],
    404: ["conversation_not_found", "message_not_found"],
    409: ["message_deleted"],
    422: ["e2ee_reaction", "reaction_not_allowed"],
}


class ReactionAddApi(APIView):
    @api_doc(
        "React to a message (idempotent)",
        errors=_REACTION_ERRORS,
        request=ReactionInputSerializer,
        responses=ReactionChangeOutSerializer,
    )
    def post(self, request: Request, message_id: int) -> Response:
        serializer = ReactionInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        change = services.reaction_add(
            user=request_user(request), message_id=message_id, emoji=serializer.validated_data["emoji"]
        )
        return Response(change.data())


class ReactionRemoveApi(APIView):
    @api_doc(
        "Take back a reaction (idempotent)",
        errors={400: ["invalid_reaction"], 404: ["conversation_not_found", "message_not_found"]},
        responses={200: ReactionChangeOutSerializer},
    )
    def delete(self, request: Request, message_id: int, emoji: str) -> Response:
        change = services.reaction_remove(user=request_user(request), message_id=message_id, emoji=emoji)
        return Response(change.data())


class MessagePinApi(APIView):
    @api_doc(
        "Pin a message (idempotent)",
        errors={
            403: ["not_group_admin"],
            404: ["conversation_not_found", "message_not_found"],
            409: ["message_deleted", "pins_full"],
            422: ["pin_not_allowed"],
        },
        request=None,
        responses=PinChangeOutSerializer,
    )
    def put(self, request: Request, message_id: int) -> Response:
        return Response(services.message_pin(user=request_user(request), message_id=message_id).data())

    @api_doc(
        "Unpin a message (idempotent)",
        errors={403: ["not_group_admin"], 404: ["conversation_not_found", "message_not_found"]},
        responses={200: PinChangeOutSerializer},
    )
    def delete(self, request: Request, message_id: int) -> Response:
        return Response(services.message_unpin(user=request_user(request), message_id=message_id).data())


class MentionListApi(APIView):
    """Messages that mention the caller, newest first (cursor pagination)."""

    pagination_class = DefaultCursorPagination

    @api_doc(
        "List the messages that mention me",
        parameters=[OpenApiParameter("limit", int, description="1..200, default 50")],
        responses=MentionOutSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        paginator = self.pagination_class()
        user = request_user(request)
        page = (
            paginator.paginate_queryset(annotation_selectors.mention_list(user=user), request, view=self)
            or []
        )
        data: list[dict[str, Any]] = [
            {
                "id": mention.pk,
                "conversation_id": mention.conversation_id,
                "created_at": mention.created_at.isoformat(),
                "message": selectors.message_data(mention.message),
            }
            for mention in page
        ]
        audit.record(audited.MENTION_LIST, request=request)
        return paginator.get_paginated_response(data)
