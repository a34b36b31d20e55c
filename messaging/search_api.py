"""``GET /api/v1/search/messages``: full-text search over the caller's readable messages
(``messaging/search.py``). One audit row per search, without the query text."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import request_user
from audit import actions as audited
from audit import services as audit
from core.openapi import api_doc
from core.throttling import ScopedRateThrottle
from core.validation import QuerySerializer

from . import search, selectors
from .serializers import MessageOutSerializer


class _OptionalBooleanField(serializers.BooleanField):
    """A boolean query parameter that may be left out (None) but never given as ``null``."""

    NULL_VALUES = {None}


class SearchQuerySerializer(QuerySerializer):
    q = serializers.CharField(max_length=search.QUERY_MAX_LENGTH, trim_whitespace=False)
    conversation_id = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    sender_id = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    has_attachment = _OptionalBooleanField(required=False, allow_null=True, default=None)
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
    cursor = serializers.CharField(required=False, max_length=200)
    limit = serializers.IntegerField(
        required=False, min_value=1, max_value=search.LIMIT_MAX, default=search.LIMIT_DEFAULT
    )


class SnippetSegmentSerializer(serializers.Serializer[Any]):
    text = serializers.CharField()
    match = serializers.BooleanField()


class SearchHitSerializer(serializers.Serializer[Any]):
    message = MessageOutSerializer()
    rank = serializers.FloatField(help_text="PostgreSQL ts_rank (0 on databases without full-text search)")
    snippet = SnippetSegmentSerializer(many=True, help_text="the matching part of the text, matches marked")


class SearchOutSerializer(serializers.Serializer[Any]):
    results = SearchHitSerializer(many=True)
    next_cursor = serializers.CharField(allow_null=True, help_text="pass as ?cursor= for the next page")


class MessageSearchApi(APIView):
    """Best match first; plaintext conversations only (end-to-end encrypted ones are searched by
    their clients). Every search is one audit row (``message.search``), never its words."""

    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "search"

    @api_doc(
        "Search my messages",
        errors={400: ["invalid_cursor", "invalid_query"]},
        parameters=[
            OpenApiParameter("q", str, required=True, description='words, "a phrase", or, -word'),
            OpenApiParameter("conversation_id", int, description="only this conversation"),
            OpenApiParameter("sender_id", int, description="only this sender's messages"),
            OpenApiParameter("has_attachment", bool, description="true: with files; false: without"),
            OpenApiParameter("since", str, description="created at or after (ISO 8601)"),
            OpenApiParameter("until", str, description="created before (ISO 8601)"),
            OpenApiParameter("cursor", str, description="next_cursor of the previous page"),
            OpenApiParameter(
                "limit", int, description=f"1..{search.LIMIT_MAX}, default {search.LIMIT_DEFAULT}"
            ),
        ],
        responses=SearchOutSerializer,
    )
    def get(self, request: Request) -> Response:
        params = SearchQuerySerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        query = search.SearchQuery(
            text=data["q"],
            conversation_id=data.get("conversation_id"),
            sender_id=data.get("sender_id"),
            has_attachment=data.get("has_attachment"),
            since=data.get("since"),
            until=data.get("until"),
            cursor=data.get("cursor"),
            limit=data["limit"],
        )
        page = search.message_search(user=request_user(request), query=query)
        audit.record(
            audited.MESSAGE_SEARCH,
            request=request,
            object_type="conversation" if query.conversation_id is not None else "",
            object_id=query.conversation_id,
        )
        return Response(
            {
                "results": [
                    {
                        "message": selectors.message_data(h.message, h.attachments),
                        "rank": h.rank,
                        "snippet": h.snippet,
                    }
                    for h in page.hits
                ],
                "next_cursor": page.next_cursor,
            }
        )
