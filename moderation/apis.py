"""Reports REST API: members file reports and follow their own; users read the notices
moderators gave them. Thin views: one service or selector call each."""

from __future__ import annotations

from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import request_user
from core.openapi import api_doc
from core.pagination import DefaultCursorPagination

from . import selectors, services
from .serializers import NoticeOutSerializer, ReportCreateInputSerializer, ReportOutSerializer

CREATE_ERRORS = {
    400: [
        "invalid_report_target",
        "invalid_reason",
        "report_text_too_long",
        "shared_text_not_allowed",
        "cannot_report_self",
        "message_not_reportable",
    ],
    404: ["message_not_found", "user_not_found"],
}


class ReportListCreateApi(APIView):
    pagination_class = DefaultCursorPagination

    @api_doc("List the reports I filed (newest first)", responses=ReportOutSerializer(many=True))
    def get(self, request: Request) -> Response:
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(
            selectors.report_list(user=request_user(request)), request, view=self
        )
        return paginator.get_paginated_response([selectors.report_data(r) for r in page or []])

    @api_doc(
        "Report a message or a user (a repeat answers the first report, 200)",
        errors=CREATE_ERRORS,
        request=ReportCreateInputSerializer,
        responses={200: ReportOutSerializer, 201: ReportOutSerializer},
    )
    def post(self, request: Request) -> Response:
        serializer = ReportCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        report, created = services.report_create(reporter=request_user(request), **serializer.validated_data)
        return Response(
            selectors.report_data(report), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class ReportDetailApi(APIView):
    @api_doc("Read one of my reports", errors={404: ["report_not_found"]}, responses=ReportOutSerializer)
    def get(self, request: Request, report_id: int) -> Response:
        report = selectors.report_get(user=request_user(request), report_id=report_id)
        return Response(selectors.report_data(report))


class NoticeListApi(APIView):
    pagination_class = DefaultCursorPagination

    @api_doc("List the moderators' notices to me (newest first)", responses=NoticeOutSerializer(many=True))
    def get(self, request: Request) -> Response:
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(
            selectors.notice_list(user=request_user(request)), request, view=self
        )
        return paginator.get_paginated_response([selectors.notice_data(n) for n in page or []])
