"""Groups REST API: thin views over groups.services; a group's id is its conversation's id."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import request_user
from messaging.serializers import ConversationOutSerializer

from . import selectors, services
from .serializers import (
    GroupCreateInputSerializer,
    GroupUpdateInputSerializer,
    MemberAddInputSerializer,
    MemberRoleInputSerializer,
)


class GroupCreateApi(APIView):
    @extend_schema(request=GroupCreateInputSerializer, responses={201: ConversationOutSerializer})
    def post(self, request: Request) -> Response:
        serializer = GroupCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = request_user(request)
        group = services.group_create(creator=user, **serializer.validated_data)
        return Response(selectors.group_get(user=user, group_id=group.pk), status=status.HTTP_201_CREATED)


class GroupDetailApi(APIView):
    @extend_schema(responses=ConversationOutSerializer)
    def get(self, request: Request, group_id: int) -> Response:
        return Response(selectors.group_get(user=request_user(request), group_id=group_id))

    @extend_schema(request=GroupUpdateInputSerializer, responses=ConversationOutSerializer)
    def patch(self, request: Request, group_id: int) -> Response:
        serializer = GroupUpdateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = request_user(request)
        services.group_update(actor=user, group_id=group_id, data=dict(serializer.validated_data))
        return Response(selectors.group_get(user=user, group_id=group_id))


class GroupMemberAddApi(APIView):
    @extend_schema(request=MemberAddInputSerializer, responses={201: ConversationOutSerializer})
    def post(self, request: Request, group_id: int) -> Response:
        serializer = MemberAddInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = request_user(request)
        services.member_add(actor=user, group_id=group_id, user_id=serializer.validated_data["user_id"])
        return Response(selectors.group_get(user=user, group_id=group_id), status=status.HTTP_201_CREATED)


class GroupMemberApi(APIView):
    @extend_schema(responses={204: None})
    def delete(self, request: Request, group_id: int, user_id: int) -> Response:
        services.member_remove(actor=request_user(request), group_id=group_id, user_id=user_id)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=MemberRoleInputSerializer, responses=ConversationOutSerializer)
    def patch(self, request: Request, group_id: int, user_id: int) -> Response:
        serializer = MemberRoleInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = request_user(request)
        services.member_set_role(
            actor=user, group_id=group_id, user_id=user_id, role=serializer.validated_data["role"]
        )
        return Response(selectors.group_get(user=user, group_id=group_id))


class GroupLeaveApi(APIView):
    @extend_schema(request=None, responses={204: None})
    def post(self, request: Request, group_id: int) -> Response:
        services.member_leave(user=request_user(request), group_id=group_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
