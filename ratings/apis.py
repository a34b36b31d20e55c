"""Ratings REST API: a consultation's review (its patient writes and changes it, its doctor
replies) and a doctor's public list. Thin views."""

from __future__ import annotations

from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import request_user
from core.openapi import api_doc
from core.pagination import DefaultCursorPagination

from . import selectors, services
from .serializers import (
    PublicReviewOutSerializer,
    ReviewCreateInputSerializer,
    ReviewOutSerializer,
    ReviewReplyInputSerializer,
    ReviewUpdateInputSerializer,
)

BAD_INPUT = ["comment_too_long", "invalid", "invalid_stars"]


class ConsultationRatingApi(APIView):
    @api_doc(
        "Get a consultation's rating (its patient or doctor)",
        errors={404: ["consultation_not_found", "rating_not_found"]},
        responses=ReviewOutSerializer,
    )
    def get(self, request: Request, consultation_id: int) -> Response:
        review = selectors.review_get(user=request_user(request), consultation_id=consultation_id)
        return Response(selectors.review_data(review))

    @api_doc(
        "Rate a completed consultation (its patient, once)",
        errors={
            400: BAD_INPUT,
            403: ["not_the_patient"],
            404: ["consultation_not_found"],
            409: ["already_rated", "consultation_not_completed"],
        },
        request=ReviewCreateInputSerializer,
        responses={201: ReviewOutSerializer},
    )
    def post(self, request: Request, consultation_id: int) -> Response:
        serializer = ReviewCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        review = services.review_create(
            patient=request_user(request), consultation_id=consultation_id, **serializer.validated_data
        )
        return Response(selectors.review_data(review), status=status.HTTP_201_CREATED)

    @api_doc(
        "Change my rating (within RATING_EDIT_DAYS of writing it)",
        errors={
            400: BAD_INPUT,
            403: ["not_the_patient"],
            404: ["consultation_not_found", "rating_not_found"],
            409: ["edit_window_closed", "rating_hidden"],
        },
        request=ReviewUpdateInputSerializer,
        responses=ReviewOutSerializer,
    )
    def patch(self, request: Request, consultation_id: int) -> Response:
        serializer = ReviewUpdateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        review = services.review_update(
            patient=request_user(request), consultation_id=consultation_id, **serializer.validated_data
        )
        return Response(selectors.review_data(review))


class ConsultationRatingReplyApi(APIView):
    @api_doc(
        "Reply to a consultation's rating (its doctor, once)",
        errors={
            400: ["empty_reply", "invalid", "reply_too_long"],
            403: ["not_the_doctor"],
            404: ["consultation_not_found", "rating_not_found"],
            409: ["already_replied"],
        },
        request=ReviewReplyInputSerializer,
        responses=ReviewOutSerializer,
    )
    def put(self, request: Request, consultation_id: int) -> Response:
        serializer = ReviewReplyInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        review = services.review_reply(
            doctor=request_user(request),
            consultation_id=consultation_id,
            text=serializer.validated_data["text"],
        )
        return Response(selectors.review_data(review))


class DoctorRatingListApi(APIView):
    pagination_class = DefaultCursorPagination

    @api_doc(
        "A doctor's reviews (visible ones, newest first; no patient named)",
        errors={404: ["doctor_not_found"]},
        responses=PublicReviewOutSerializer(many=True),
    )
    def get(self, request: Request, doctor_id: int) -> Response:
        rows = selectors.doctor_reviews(doctor_id=doctor_id)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(rows, request, view=self) or []
        return paginator.get_paginated_response([selectors.public_review_data(r) for r in page])
