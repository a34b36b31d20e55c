"""Payments REST API: consultations, availability, payouts, the Stripe webhook. Thin views."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import User
from accounts.permissions import request_user
from core import metrics
from core.errors import ApplicationError
from core.openapi import api_doc
from core.pagination import DefaultCursorPagination
from payments import payouts, webhooks

from . import booking, gateway, selectors, services
from .models import Consultation
from .serializers import (
    AvailabilityInputSerializer,
    AvailabilityOutSerializer,
    ConsultationCreateInputSerializer,
    ConsultationDeclineInputSerializer,
    ConsultationDetailOutSerializer,
    ConsultationListQuerySerializer,
    ConsultationOutSerializer,
    EmptyInputSerializer,
    OnboardingOutSerializer,
    PaymentOutSerializer,
    PayoutEntryOutSerializer,
    StripeAccountOutSerializer,
    consultation_out,
)


class ConsultationListCreateApi(APIView):
    """The caller's consultations (as patient or doctor); a patient requests a new one."""

    pagination_class = DefaultCursorPagination

    @api_doc(
        "List my consultations",
        parameters=[
            OpenApiParameter("state", str, description="only this state"),
            OpenApiParameter("role", str, description="patient | doctor: only where I am that"),
        ],
        responses=ConsultationOutSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        query = ConsultationListQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        paginator = self.pagination_class()
        qs = selectors.consultation_list(
            user=request_user(request),
            state=query.validated_data.get("state"),
            role=query.validated_data.get("role"),
        )
        page = paginator.paginate_queryset(qs, request, view=self) or []
        data = []
        for item in ConsultationOutSerializer(page, many=True).data:
            if item["doctor_id"] != request.user.pk:
                item.pop("payout_status", None)
            data.append(item)
        return paginator.get_paginated_response(data)

    @api_doc(
        "Request a consultation",
        errors={
            400: ["cannot_contact_self", "invalid_kind", "invalid_reason", "reason_too_long"],
            403: ["blocked", "contact_not_allowed", "patients_only"],
            404: ["consultation_not_found", "conversation_not_found", "doctor_not_found", "user_not_found"],
            409: [
                "already_member",
                "consultation_open",
                "doctor_has_no_fee",
                "doctor_offline",
                "doctor_unavailable",
                "invalid_transition",
            ],
            422: ["e2ee_disabled", "e2ee_mandatory"],
            502: ["payment_provider_error"],
            503: ["payments_unavailable"],
        },
        request=ConsultationCreateInputSerializer,
        responses={201: dict},
    )
    def post(self, request: Request) -> Response:
        serializer = ConsultationCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = request_user(request)
        consultation = booking.consultation_request(patient=user, **serializer.validated_data)
        fresh = selectors.consultation_get(user=user, consultation_id=consultation.pk)
        return Response(
            {
                "consultation": consultation_out(fresh, viewer=user),
                "payment": PaymentOutSerializer(fresh).data,
            },
            status=status.HTTP_201_CREATED,
        )


class ConsultationDetailApi(APIView):
    @api_doc(
        "Get a consultation",
        errors={404: ["consultation_not_found"]},
        responses=ConsultationDetailOutSerializer,
    )
    def get(self, request: Request, consultation_id: int) -> Response:
        user = request_user(request)
        consultation = selectors.consultation_get(user=user, consultation_id=consultation_id)
        return Response(consultation_out(consultation, viewer=user))


class _ConsultationActionApi(APIView):
    """POST consultations/{id}/<action>: one service call, the consultation back."""

    input_serializer: ClassVar[type[Any]] = EmptyInputSerializer
    service: ClassVar[Callable[..., Consultation]]

    def call(self, user: User, consultation_id: int, data: dict[str, Any]) -> Consultation:
        return type(self).service(user=user, consultation_id=consultation_id)

    @extend_schema(request=EmptyInputSerializer, responses=ConsultationDetailOutSerializer)
    def post(self, request: Request, consultation_id: int) -> Response:
        serializer = self.input_serializer(data=request.data or {})
        serializer.is_valid(raise_exception=True)
        user = request_user(request)
        self.call(user, consultation_id, dict(serializer.validated_data))
        fresh = selectors.consultation_get(user=user, consultation_id=consultation_id)
        return Response(consultation_out(fresh, viewer=user))


@extend_schema_view(
    post=api_doc(
        "Accept a consultation (doctor)",
        errors={
            403: ["not_allowed"],
            404: ["consultation_not_found"],
            409: ["invalid_transition", "payment_not_authorised", "payment_not_captured"],
            502: ["payment_provider_error"],
            503: ["payments_unavailable"],
        },
        request=EmptyInputSerializer,
        responses=ConsultationDetailOutSerializer,
    )
)
class ConsultationAcceptApi(_ConsultationActionApi):
    """The doctor accepts (the payment is captured)."""

    service = services.consultation_accept


@extend_schema_view(
    post=api_doc(
        "Start a consultation (doctor)",
        errors={403: ["not_allowed"], 404: ["consultation_not_found"], 409: ["invalid_transition"]},
        request=EmptyInputSerializer,
        responses=ConsultationDetailOutSerializer,
    )
)
class ConsultationStartApi(_ConsultationActionApi):
    service = services.consultation_start


@extend_schema_view(
    post=api_doc(
        "Complete a consultation (doctor)",
        errors={
            403: ["not_allowed"],
            404: ["consultation_not_found"],
            409: ["invalid_transition"],
            502: ["payment_provider_error"],
            503: ["payments_unavailable"],
        },
        request=EmptyInputSerializer,
        responses=ConsultationDetailOutSerializer,
    )
)
class ConsultationCompleteApi(_ConsultationActionApi):
    """The doctor completes (the doctor's share is transferred)."""

    service = services.consultation_complete


@extend_schema_view(
    post=api_doc(
        "Cancel a consultation",
        errors={
            400: ["invalid_amount", "refund_too_large"],
            403: ["not_allowed"],
            404: ["consultation_not_found"],
            409: ["cannot_cancel", "invalid_transition", "not_refundable", "nothing_to_refund"],
            502: ["payment_provider_error"],
            503: ["payments_unavailable"],
        },
        request=EmptyInputSerializer,
        responses=ConsultationDetailOutSerializer,
    )
)
class ConsultationCancelApi(_ConsultationActionApi):
    service = services.consultation_cancel


class ConsultationDeclineApi(_ConsultationActionApi):
    """The doctor declines (the authorisation is released)."""

    input_serializer = ConsultationDeclineInputSerializer

    def call(self, user: User, consultation_id: int, data: dict[str, Any]) -> Consultation:
        return services.consultation_decline(
            user=user, consultation_id=consultation_id, note=data.get("reason", "")
        )

    @api_doc(
        "Decline a consultation (doctor)",
        errors={
            400: ["invalid_reason", "reason_too_long"],
            403: ["not_allowed"],
            404: ["consultation_not_found"],
            409: ["invalid_transition"],
            502: ["payment_provider_error"],
            503: ["payments_unavailable"],
        },
        request=ConsultationDeclineInputSerializer,
        responses=ConsultationDetailOutSerializer,
    )
    def post(self, request: Request, consultation_id: int) -> Response:
        return super().post(request, consultation_id)


class AvailabilityMeApi(APIView):
    """A doctor's own availability: online switch, time zone, weekly hours."""

    @api_doc(
        "Get my availability (doctors)", errors={403: ["doctors_only"]}, responses=AvailabilityOutSerializer
    )
    def get(self, request: Request) -> Response:
        user = request_user(request)
        if user.role != User.Role.DOCTOR:
            raise ApplicationError("doctors_only", "Only doctors have availability.", status=403)
        availability = selectors.availability_get(doctor_id=user.pk)
        return Response(selectors.availability_data(doctor_id=user.pk, availability=availability))

    @api_doc(
        "Set my availability (doctors)",
        errors={
            400: ["invalid_outside_hours", "invalid_timezone", "invalid_weekly_hours"],
            403: ["doctors_only"],
        },
        request=AvailabilityInputSerializer,
        responses=AvailabilityOutSerializer,
    )
    def put(self, request: Request) -> Response:
        serializer = AvailabilityInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        user = request_user(request)
        availability = booking.availability_set(
            doctor=user,
            online=data.get("online"),
            timezone_name=data.get("timezone"),
            outside_hours=data.get("outside_hours"),
            weekly_hours=data.get("weekly_hours"),
        )
        return Response(selectors.availability_data(doctor_id=user.pk, availability=availability))


class DoctorAvailabilityApi(APIView):
    """A verified doctor's availability, as patients see it."""

    @api_doc(
        "Get a doctor's availability", errors={404: ["doctor_not_found"]}, responses=AvailabilityOutSerializer
    )
    def get(self, request: Request, doctor_id: int) -> Response:
        from accounts.selectors import doctor_get

        doctor_get(doctor_id=doctor_id)  # verified doctors only
        availability = selectors.availability_get(doctor_id=doctor_id)
        return Response(selectors.availability_data(doctor_id=doctor_id, availability=availability))


class PayoutOnboardingApi(APIView):
    """A doctor's Stripe Connect Express onboarding link (the account is created once)."""

    @api_doc(
        "Start payout onboarding (doctors)",
        errors={
            403: ["doctors_only", "not_verified"],
            502: ["payment_provider_error"],
            503: ["payments_unavailable"],
        },
        request=None,
        responses=OnboardingOutSerializer,
    )
    def post(self, request: Request) -> Response:
        account, url, expires_at = payouts.payout_onboarding_start(doctor=request_user(request))
        return Response(
            {"url": url, "expires_at": expires_at, "account": StripeAccountOutSerializer(account).data}
        )


class PayoutListApi(APIView):
    """The caller's own payout account status and transfers (doctors only)."""

    @api_doc("List my payouts (doctors)", errors={403: ["doctors_only"]}, responses=dict)
    def get(self, request: Request) -> Response:
        user = request_user(request)
        if user.role != User.Role.DOCTOR:
            raise ApplicationError("doctors_only", "Only doctors receive payouts.", status=403)
        account = selectors.stripe_account_get(doctor=user)
        paginator = DefaultCursorPagination()
        page = paginator.paginate_queryset(selectors.payout_entries(doctor=user), request, view=self) or []
        response = paginator.get_paginated_response(PayoutEntryOutSerializer(page, many=True).data)
        response.data["account"] = StripeAccountOutSerializer(account).data if account else None
        return response


class StripeWebhookApi(APIView):
    """Stripe events: signature checked, each event id applied once, 2xx once recorded."""

    authentication_classes = ()
    permission_classes = ()
    throttle_classes = ()

    @api_doc(
        "Receive a Stripe event",
        errors={
            400: ["invalid_event", "invalid_signature"],
            502: ["payment_provider_error"],
            503: ["webhooks_not_configured"],
        },
        request=None,
        responses={200: dict},
    )
    def post(self, request: Request) -> Response:
        try:
            event = gateway.parse_webhook(request._request.body, request.headers.get("Stripe-Signature"))
        except gateway.WebhookSignatureError as exc:
            metrics.webhook("", "refused")
            raise ApplicationError(
                "invalid_signature", "The webhook signature is not valid.", status=400
            ) from exc
        if not event.id or not event.type:
            raise ApplicationError("invalid_event", "The event has no id or type.", status=400)
        record, applied = webhooks.webhook_event_process(event=event)
        metrics.webhook(event.type, "processed" if applied else "duplicate")
        return Response(
            {"received": True, "duplicate": not applied, "result": record.result if record else ""}
        )
