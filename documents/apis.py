"""Documents REST API: ask for a PDF (202), poll it, download it through a signed link. Thin views."""

from __future__ import annotations

from typing import Any

from django.http import FileResponse
from drf_spectacular.utils import OpenApiParameter
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import request_user
from audit import actions as audited
from audit import services as audit
from core.openapi import api_doc
from core.pagination import DefaultCursorPagination
from core.throttling import ScopedRateThrottle

from . import selectors, services
from . import validators as v
from .serializers import (
    DocumentLinkOutSerializer,
    DocumentListQuerySerializer,
    DocumentOutSerializer,
    DocumentRequestInputSerializer,
)


class DocumentListCreateApi(APIView):
    """The caller's documents; ask for one (rendering is queued: 202)."""

    pagination_class = DefaultCursorPagination
    throttle_scope = "document"

    def get_throttles(self) -> list[Any]:
        """Asking (POST: a rendering in the worker) is counted per user; listing is not."""
        throttles: list[Any] = list(super().get_throttles())
        if self.request.method == "POST":
            throttles.append(ScopedRateThrottle())
        return throttles

    @api_doc(
        "List my documents (receipts, consultation summaries, prescriptions)",
        parameters=[
            OpenApiParameter("kind", str, enum=list(v.KINDS), description="only this kind"),
            OpenApiParameter("consultation_id", int, description="only this consultation's"),
        ],
        responses=DocumentOutSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        query = DocumentListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        paginator = self.pagination_class()
        qs = selectors.document_list(
            user=request_user(request),
            kind=query.validated_data.get("kind"),
            consultation_id=query.validated_data.get("consultation_id"),
        )
        page = paginator.paginate_queryset(qs, request, view=self) or []
        audit.record(audited.DOCUMENT_LIST, request=request)
        return paginator.get_paginated_response([selectors.document_data(d) for d in page])

    @api_doc(
        "Ask for a document (PDF); poll GET documents/{id} until it is ready",
        errors={
            400: ["invalid", "invalid_kind"],
            403: ["chat_patient_only"],
            404: ["consultation_not_found", "payment_not_found", "prescription_not_found"],
            409: ["not_paid"],
        },
        request=DocumentRequestInputSerializer,
        responses={202: DocumentOutSerializer},
    )
    def post(self, request: Request) -> Response:
        serializer = DocumentRequestInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        document = services.document_request(user=request_user(request), **serializer.validated_data)
        audit.record(audited.DOCUMENT_REQUEST, request=request, object_type="document", object_id=document.pk)
        return Response(selectors.document_data(document), status=status.HTTP_202_ACCEPTED)


class DocumentDetailApi(APIView):
    """A document's state and, once ready, a short-lived download link."""

    @api_doc(
        "Get a document (its state; a download link once ready)",
        errors={404: ["document_not_found"]},
        responses=DocumentLinkOutSerializer,
    )
    def get(self, request: Request, document_id: int) -> Response:
        data = selectors.document_link(
            user_id=request_user(request).pk, document_id=document_id, build_url=request.build_absolute_uri
        )
        audit.record(audited.DOCUMENT_LINK, request=request, object_type="document", object_id=document_id)
        return Response(data)


class DocumentContentApi(APIView):
    """The PDF, through a signed link from ``GET documents/{id}``; access re-checked here."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []

    @api_doc(
        "Download a document's PDF (signed link)",
        errors={
            403: ["invalid_link", "link_expired"],
            404: ["document_not_found"],
            409: ["document_not_ready"],
        },
        parameters=[OpenApiParameter("token", str, required=True)],
        responses={(200, "application/pdf"): bytes},
    )
    def get(self, request: Request, document_id: int) -> FileResponse:
        document, holder_id = selectors.document_from_token(
            document_id=document_id, token=request.query_params.get("token", "")
        )
        audit.record(
            audited.DOCUMENT_DOWNLOAD,
            request=request,
            actor=holder_id,
            object_type="document",
            object_id=document_id,
        )
        response = FileResponse(
            document.file.open("rb"),
            content_type="application/pdf",
            as_attachment=True,
            filename=selectors.filename(document),
        )
        response["X-Content-Type-Options"] = "nosniff"
        response["Cache-Control"] = "private, no-store"
        response["Content-Security-Policy"] = "default-src 'none'; sandbox"
        return response
