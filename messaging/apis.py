"""Messaging REST API: conversations, history (keyset on seq), blocks. Thin views."""

from __future__ import annotations

from typing import Any

from django.http import FileResponse
from drf_spectacular.utils import OpenApiParameter
from rest_framework import status
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import User
from accounts.permissions import request_user
from audit import actions as audited
from audit import services as audit
from core import replica
from core.errors import ApplicationError
from core.openapi import api_doc
from core.pagination import DefaultCursorPagination
from core.throttling import ScopedRateThrottle

from . import annotation_selectors, selectors, services
from .serializers import (
    AttachmentLinkSerializer,
    AttachmentUploadOutSerializer,
    BlockInputSerializer,
    ConversationOpenInputSerializer,
    ConversationOutSerializer,
    HistoryOutSerializer,
    HistoryQuerySerializer,
    MessageVersionsOutSerializer,
)


class ConversationPagination(DefaultCursorPagination):
    ordering = ("-conversation__last_message_at", "-conversation_id")


def _conversation_payload(user: User, conversation_id: int) -> dict[str, Any]:
    membership = selectors.membership_get(user=user, conversation_id=conversation_id)
    members = selectors.conversation_members(conversation_ids=[conversation_id], viewer_id=user.pk)
    pinned = annotation_selectors.pinned_lists([membership])
    return selectors.conversation_data(
        membership, members.get(conversation_id, []), pinned=pinned[conversation_id]
    )


class ConversationListCreateApi(APIView):
    pagination_class = ConversationPagination

    @api_doc("List my conversations", responses=ConversationOutSerializer(many=True))
    def get(self, request: Request) -> Response:
        paginator = self.pagination_class()
        page = (
            paginator.paginate_queryset(
                selectors.conversation_list(user=request_user(request)), request, view=self
            )
            or []
        )
        members = selectors.conversation_members(
            conversation_ids=[m.conversation_id for m in page], viewer_id=request_user(request).pk
        )
        pinned = annotation_selectors.pinned_lists(list(page))
        data = [
            selectors.conversation_data(
                m, members.get(m.conversation_id, []), pinned=pinned[m.conversation_id]
            )
            for m in page
        ]
        audit.record(audited.CONVERSATION_LIST, request=request)
        return paginator.get_paginated_response(data)

    @api_doc(
        "Open a direct conversation",
        errors={
            400: ["cannot_contact_self"],
            403: ["blocked", "contact_not_allowed"],
            404: ["conversation_not_found", "user_not_found"],
            409: ["already_member"],
            422: ["e2ee_disabled", "e2ee_mandatory"],
        },
        request=ConversationOpenInputSerializer,
        responses={200: ConversationOutSerializer, 201: ConversationOutSerializer},
    )
    def post(self, request: Request) -> Response:
        serializer = ConversationOpenInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = request_user(request)
        conversation, created = services.conversation_open_direct(user=user, **serializer.validated_data)
        return Response(
            _conversation_payload(user, conversation.pk),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class ConversationDetailApi(APIView):
    @api_doc(
        "Get a conversation", errors={404: ["conversation_not_found"]}, responses=ConversationOutSerializer
    )
    def get(self, request: Request, conversation_id: int) -> Response:
        data = _conversation_payload(request_user(request), conversation_id)
        audit.record(
            audited.CONVERSATION_READ, request=request, object_type="conversation", object_id=conversation_id
        )
        return Response(data)


class MessageHistoryApi(APIView):
    """History, ascending by seq. No bounds: the latest page; ``after_seq``/``before_seq`` page on."""

    @api_doc(
        "Read a conversation's history",
        errors={404: ["conversation_not_found"]},
        parameters=[
            OpenApiParameter("after_seq", int),
            OpenApiParameter("before_seq", int),
            OpenApiParameter("limit", int, description="1..200, default 50"),
            OpenApiParameter(
                "device_id",
                int,
                description="end-to-end encrypted conversations: this device's ciphertexts "
                "(or the X-Device-Id header)",
            ),
        ],
        responses=HistoryOutSerializer,
    )
    def get(self, request: Request, conversation_id: int) -> Response:
        query = HistoryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        device_id = query.validated_data.get("device_id")
        header = request.headers.get("X-Device-Id", "")
        if device_id is None and header.isascii() and header.isdigit() and len(header) <= 18:
            device_id = int(header)
        user = request_user(request)
        # A page of history tolerates replica lag (core/replica.py), except right after the
        # caller's own write.
        results, has_more = replica.lag_tolerant(
            selectors.message_history_data,
            user_id=user.pk,
            user=user,
            conversation_id=conversation_id,
            after_seq=query.validated_data.get("after_seq"),
            before_seq=query.validated_data.get("before_seq"),
            limit=query.validated_data["limit"],
            device_id=device_id,
        )
        audit.record(
            audited.HISTORY_READ, request=request, object_type="conversation", object_id=conversation_id
        )
        return Response({"results": results, "has_more": has_more})


class MessageVersionsApi(APIView):
    """The edit history of one message: its texts with their times (members who may read it)."""

    @api_doc(
        "Read a message's versions (edit history)",
        errors={404: ["message_not_found"]},
        responses=MessageVersionsOutSerializer,
    )
    def get(self, request: Request, message_id: int) -> Response:
        data = selectors.message_versions_data(user=request_user(request), message_id=message_id)
        audit.record(
            audited.MESSAGE_VERSIONS_READ, request=request, object_type="message", object_id=message_id
        )
        return Response(data)


class BlockCreateApi(APIView):
    @api_doc(
        "Block a user",
        errors={400: ["cannot_block_self"], 404: ["user_not_found"]},
        request=BlockInputSerializer,
        responses={204: None},
    )
    def post(self, request: Request) -> Response:
        serializer = BlockInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.block_user(user=request_user(request), blocked_id=serializer.validated_data["user_id"])
        return Response(status=status.HTTP_204_NO_CONTENT)


class BlockDeleteApi(APIView):
    @api_doc("Unblock a user", responses={204: None})
    def delete(self, request: Request, user_id: int) -> Response:
        services.unblock_user(user=request_user(request), blocked_id=user_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AttachmentUploadApi(APIView):
    """Upload a file (multipart field ``file``); send it with ``message.send`` ``attachment_ids``
    once its ``state`` is ``ready`` (video and audio: after ``attachment.updated``)."""

    parser_classes = [MultiPartParser]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "upload"

    @api_doc(
        "Upload an attachment",
        errors={
            400: ["empty_file", "file_required"],
            413: ["file_too_large", "image_too_large"],
            415: ["unsupported_file_type"],
            422: ["corrupt_document", "corrupt_image", "document_encrypted"],
            429: ["quota_exceeded"],
            503: ["media_processing_unavailable"],
        },
        request={
            "multipart/form-data": {
                "type": "object",
                "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "encrypted": {
                        "type": "boolean",
                        "description": "true: the file is already encrypted for an end-to-end "
                        "encrypted conversation (opaque bytes, never processed)",
                    },
                },
            }
        },
        responses={201: AttachmentUploadOutSerializer},
    )
    def post(self, request: Request) -> Response:
        upload = request.FILES.get("file")
        if upload is None:
            raise ApplicationError("file_required", "Send the file in the multipart field 'file'.")
        form = request.data if isinstance(request.data, dict) else {}
        flag = str(form.get("encrypted", "false")).strip().lower()
        if flag not in ("true", "false", "1", "0"):
            upload.close()
            raise ApplicationError(
                "invalid", "encrypted must be true or false.", fields={"encrypted": ["invalid"]}
            )
        try:
            attachment = services.attachment_upload(
                uploader=request_user(request),
                upload=upload,
                name=upload.name or "file",
                encrypted=flag in ("true", "1"),
            )
        finally:
            upload.close()
        return Response(selectors.attachment_state_data(attachment), status=status.HTTP_201_CREATED)


class AttachmentDetailApi(APIView):
    """A short-lived download link for an attachment the caller may see."""

    @api_doc(
        "Get an attachment's download link",
        errors={404: ["attachment_not_found"]},
        responses=AttachmentLinkSerializer,
    )
    def get(self, request: Request, attachment_id: int) -> Response:
        link = selectors.attachment_link(
            user_id=request_user(request).pk,
            attachment_id=attachment_id,
            build_url=request.build_absolute_uri,
        )
        audit.record(
            audited.ATTACHMENT_LINK, request=request, object_type="attachment", object_id=attachment_id
        )
        return Response(link)


class AttachmentContentApi(APIView):
    """The bytes, through a signed link from ``GET attachments/{id}``; access re-checked here."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []

    @api_doc(
        "Download an attachment's bytes (signed link)",
        errors={
            403: ["invalid_link", "link_expired"],
            404: ["attachment_not_found"],
            409: ["attachment_processing"],
        },
        parameters=[OpenApiParameter("token", str, required=True)],
        responses={200: bytes},
    )
    def get(self, request: Request, attachment_id: int) -> FileResponse:
        attachment, variant, holder_id = selectors.attachment_from_token(
            attachment_id=attachment_id, token=request.query_params.get("token", "")
        )
        audit.record(
            audited.ATTACHMENT_DOWNLOAD,
            request=request,
            actor=holder_id,
            object_type="attachment",
            object_id=attachment_id,
        )
        field = attachment.thumbnail if variant == "thumb" else attachment.file
        response = FileResponse(
            field.open("rb"), content_type="image/jpeg" if variant == "thumb" else attachment.content_type
        )
        response["Content-Disposition"] = selectors.content_disposition(attachment)
        response["X-Content-Type-Options"] = "nosniff"
        response["Cache-Control"] = "private, no-store"
        response["Content-Security-Policy"] = "default-src 'none'; sandbox"
        return response
