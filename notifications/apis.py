"""Push REST API: per-conversation mute, per-user preferences. Thin views."""

from __future__ import annotations

from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import request_user
from core.openapi import api_doc

from . import selectors, services
from .serializers import MuteInputSerializer, MuteOutSerializer, PreferenceSerializer


class ConversationMuteApi(APIView):
    """``GET`` the mute state; ``POST {until?}`` mutes (no ``until``: until unmuted); ``DELETE`` unmutes."""

    @api_doc(
        "Get a conversation's mute state",
        errors={404: ["conversation_not_found"]},
        responses=MuteOutSerializer,
    )
    def get(self, request: Request, conversation_id: int) -> Response:
        return Response(selectors.mute_get(user=request_user(request), conversation_id=conversation_id))

    @api_doc(
        "Mute a conversation",
        errors={400: ["invalid_mute_until"], 404: ["conversation_not_found"]},
        request=MuteInputSerializer,
        responses=MuteOutSerializer,
    )
    def post(self, request: Request, conversation_id: int) -> Response:
        serializer = MuteInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        membership = services.conversation_mute(
            user=request_user(request),
            conversation_id=conversation_id,
            until=serializer.validated_data["until"],
        )
        return Response(selectors.mute_data(membership))

    @api_doc(
        "Unmute a conversation", errors={404: ["conversation_not_found"]}, responses={200: MuteOutSerializer}
    )
    def delete(self, request: Request, conversation_id: int) -> Response:
        membership = services.conversation_unmute(user=request_user(request), conversation_id=conversation_id)
        return Response(selectors.mute_data(membership))


class PushPreferenceApi(APIView):
    @api_doc("Get my push preferences", responses=PreferenceSerializer)
    def get(self, request: Request) -> Response:
        return Response(selectors.preference_get(user=request_user(request)))

    @api_doc("Set my push preferences", request=PreferenceSerializer, responses=PreferenceSerializer)
    def put(self, request: Request) -> Response:
        serializer = PreferenceSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = request_user(request)
        services.preference_update(
            user=user,
            previews=serializer.validated_data["previews"],
            mentions_when_muted=serializer.validated_data.get("mentions_when_muted"),
        )
        return Response(selectors.preference_get(user=user))
