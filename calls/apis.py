"""Calls REST API: history for participants only, TURN credentials. Thin views."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import request_user
from audit import actions as audited
from audit import services as audit
from core.openapi import api_doc
from core.pagination import DefaultCursorPagination

from . import selectors, turn
from .serializers import CallListQuerySerializer, CallOutSerializer, TurnCredentialsSerializer


class CallListApi(APIView):
    pagination_class = DefaultCursorPagination

    @api_doc(
        "List my calls",
        parameters=[
            OpenApiParameter("conversation_id", int, description="only this conversation's calls"),
            OpenApiParameter("active", bool, description="true: ringing or answered now; false: over"),
        ],
        responses=CallOutSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        query = CallListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        calls = selectors.call_list(user=request_user(request), **query.validated_data)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(calls, request, view=self) or []
        audit.record(audited.CALL_LIST, request=request)
        return paginator.get_paginated_response([selectors.call_data(call) for call in page])


class CallDetailApi(APIView):
    @api_doc("Get a call", errors={404: ["call_not_found"]}, responses=CallOutSerializer)
    def get(self, request: Request, call_id: int) -> Response:
        call = selectors.call_get(user=request_user(request), call_id=call_id)
        audit.record(audited.CALL_READ, request=request, object_type="call", object_id=call_id)
        return Response(selectors.call_data(call))


class TurnCredentialsApi(APIView):
    """Short-lived TURN credentials (TURN REST API) and the STUN/TURN servers to use them with."""

    @api_doc("Get TURN credentials", errors={503: ["turn_unavailable"]}, responses=TurnCredentialsSerializer)
    def get(self, request: Request) -> Response:
        response = Response(turn.turn_credentials(user_id=request_user(request).pk))
        response["Cache-Control"] = "no-store"
        return response
