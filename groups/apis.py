"""Groups REST API: thin views over groups.services; a group's id is its conversation's id."""

from __future__ import annotations

from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import request_user
from core.openapi import api_doc
from messaging.serializers import ConversationOutSerializer

from . import avatars, selectors, services
from .serializers import (
    AvatarSetInputSerializer,
    GroupCreateInputSerializer,
    GroupUpdateInputSerializer,
    MemberAddInputSerializer,
    MemberRoleInputSerializer,
)


class GroupCreateApi(APIView):
    @api_doc(
        "Create a group",
        errors={
            400: ["cannot_contact_self", "invalid_description", "invalid_group_name"],
            403: ["blocked", "consultation_closed", "contact_not_allowed"],
            404: ["conversation_not_found", "group_not_found", "user_not_found"],
            409: ["already_member", "group_full"],
            422: ["e2ee_disabled", "e2ee_mandatory"],
        },
        request=GroupCreateInputSerializer,
        responses={201: ConversationOutSerializer},
    )
    def post(self, request: Request) -> Response:
        serializer = GroupCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = request_user(request)
        group = services.group_create(creator=user, **serializer.validated_data)
        return Response(selectors.group_get(user=user, group_id=group.pk), status=status.HTTP_201_CREATED)


class GroupDetailApi(APIView):
    @api_doc("Get a group", errors={404: ["group_not_found"]}, responses=ConversationOutSerializer)
    def get(self, request: Request, group_id: int) -> Response:
        return Response(selectors.group_get(user=request_user(request), group_id=group_id))

    @api_doc(
        "Update a group",
        errors={
            400: ["invalid_description", "invalid_group_name", "nothing_to_update"],
            403: ["consultation_closed", "not_group_admin"],
            404: ["conversation_not_found", "group_not_found"],
        },
        request=GroupUpdateInputSerializer,
        responses=ConversationOutSerializer,
    )
    def patch(self, request: Request, group_id: int) -> Response:
        serializer = GroupUpdateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = request_user(request)
        services.group_update(actor=user, group_id=group_id, data=dict(serializer.validated_data))
        return Response(selectors.group_get(user=user, group_id=group_id))


class GroupMemberAddApi(APIView):
    @api_doc(
        "Add a group member",
        errors={
            400: ["cannot_contact_self"],
            403: ["blocked", "consultation_closed", "contact_not_allowed", "not_group_admin"],
            404: ["conversation_not_found", "group_not_found", "user_not_found"],
            409: ["already_member", "group_full"],
        },
        request=MemberAddInputSerializer,
        responses={201: ConversationOutSerializer},
    )
    def post(self, request: Request, group_id: int) -> Response:
        serializer = MemberAddInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = request_user(request)
        services.member_add(actor=user, group_id=group_id, user_id=serializer.validated_data["user_id"])
        return Response(selectors.group_get(user=user, group_id=group_id), status=status.HTTP_201_CREATED)


class GroupMemberApi(APIView):
    @api_doc(
        "Remove a group member",
        errors={
            400: ["use_leave"],
            403: ["cannot_remove_member", "not_group_admin"],
            404: ["conversation_not_found", "group_not_found", "not_a_member"],
        },
        responses={204: None},
    )
    def delete(self, request: Request, group_id: int, user_id: int) -> Response:
        services.member_remove(actor=request_user(request), group_id=group_id, user_id=user_id)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @api_doc(
        "Change a member's role",
        errors={
            400: ["cannot_change_own_role", "invalid_role"],
            403: ["not_group_owner"],
            404: ["conversation_not_found", "group_not_found", "not_a_member"],
        },
        request=MemberRoleInputSerializer,
        responses=ConversationOutSerializer,
    )
    def patch(self, request: Request, group_id: int, user_id: int) -> Response:
        serializer = MemberRoleInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = request_user(request)
        services.member_set_role(
            actor=user, group_id=group_id, user_id=user_id, role=serializer.validated_data["role"]
        )
        return Response(selectors.group_get(user=user, group_id=group_id))


class GroupLeaveApi(APIView):
    @api_doc(
        "Leave a group",
        errors={404: ["conversation_not_found", "group_not_found"]},
        request=None,
        responses={204: None},
    )
    def post(self, request: Request, group_id: int) -> Response:
        services.member_leave(user=request_user(request), group_id=group_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class GroupAvatarApi(APIView):
    """The group's picture: owners and admins set, replace or remove it; members see it in the
    group's data (``avatar``) and download it as an attachment."""

    @api_doc(
        "Set or replace the group's avatar",
        errors={
            403: ["consultation_closed", "not_group_admin"],
            404: ["attachment_not_found", "conversation_not_found", "group_not_found"],
            409: ["attachment_already_used"],
            422: ["avatar_not_an_image"],
        },
        request=AvatarSetInputSerializer,
        responses=ConversationOutSerializer,
    )
    def put(self, request: Request, group_id: int) -> Response:
        serializer = AvatarSetInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = request_user(request)
        avatars.group_avatar_set(
            actor=user, group_id=group_id, attachment_id=serializer.validated_data["attachment_id"]
        )
        return Response(selectors.group_get(user=user, group_id=group_id))

    @api_doc(
        "Remove the group's avatar",
        errors={404: ["conversation_not_found", "group_not_found"], 403: ["not_group_admin"]},
        responses={204: None},
    )
    def delete(self, request: Request, group_id: int) -> Response:
        avatars.group_avatar_remove(actor=request_user(request), group_id=group_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
