"""Messaging REST API: conversations, history (keyset on seq), blocks. Thin views."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import User

from . import selectors, services
from .serializers import (
    BlockInputSerializer,
    ConversationOpenInputSerializer,
    ConversationOutSerializer,
    HistoryOutSerializer,
    HistoryQuerySerializer,
)


def _user(request: Request) -> User:
    assert isinstance(request.user, User)
    return request.user


class ConversationPagination(CursorPagination):
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 200
    ordering = ("-conversation__last_message_at", "-conversation_id")


def _conversation_payload(user: User, conversation_id: int) -> dict[str, Any]:
    membership = selectors.membership_get(user=user, conversation_id=conversation_id)
    members = selectors.conversation_members(conversation_ids=[conversation_id])
    return selectors.conversation_data(membership, members.get(conversation_id, []))


class ConversationListCreateApi(APIView):
    @extend_schema(responses=ConversationOutSerializer(many=True))
    def get(self, request: Request) -> Response:
        paginator = ConversationPagination()
        page = (
            paginator.paginate_queryset(selectors.conversation_list(user=_user(request)), request, view=self)
            or []
        )
        members = selectors.conversation_members(conversation_ids=[m.conversation_id for m in page])
        data = [selectors.conversation_data(m, members.get(m.conversation_id, [])) for m in page]
        return paginator.get_paginated_response(data)

    @extend_schema(
        request=ConversationOpenInputSerializer,
        responses={200: ConversationOutSerializer, 201: ConversationOutSerializer},
    )
    def post(self, request: Request) -> Response:
        serializer = ConversationOpenInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = _user(request)
        conversation, created = services.conversation_open_direct(user=user, **serializer.validated_data)
        return Response(
            _conversation_payload(user, conversation.pk),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class ConversationDetailApi(APIView):
    @extend_schema(responses=ConversationOutSerializer)
    def get(self, request: Request, conversation_id: int) -> Response:
        return Response(_conversation_payload(_user(request), conversation_id))


class MessageHistoryApi(APIView):
    """History, ascending by seq. No bounds: the latest page; ``after_seq``/``before_seq`` page on."""

    @extend_schema(
        parameters=[
            OpenApiParameter("after_seq", int),
            OpenApiParameter("before_seq", int),
            OpenApiParameter("limit", int, description="1..200, default 50"),
        ],
        responses=HistoryOutSerializer,
    )
    def get(self, request: Request, conversation_id: int) -> Response:
        query = HistoryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        messages, has_more = selectors.message_history(
            user=_user(request),
            conversation_id=conversation_id,
            after_seq=query.validated_data.get("after_seq"),
            before_seq=query.validated_data.get("before_seq"),
            limit=query.validated_data["limit"],
        )
        return Response({"results": [selectors.message_data(m) for m in messages], "has_more": has_more})


class BlockCreateApi(APIView):
    @extend_schema(request=BlockInputSerializer, responses={204: None})
    def post(self, request: Request) -> Response:
        serializer = BlockInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.block_user(user=_user(request), blocked_id=serializer.validated_data["user_id"])
        return Response(status=status.HTTP_204_NO_CONTENT)


class BlockDeleteApi(APIView):
    @extend_schema(responses={204: None})
    def delete(self, request: Request, user_id: int) -> Response:
        services.unblock_user(user=_user(request), blocked_id=user_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
