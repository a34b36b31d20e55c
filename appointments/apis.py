"""Appointments REST API: schedules, slots, bookings. Thin views: one service or selector call."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import request_user
from audit import actions as audited
from audit import services as audit
from audit.client import from_request as audit_client
from core.openapi import api_doc
from core.pagination import DefaultCursorPagination

from . import calendar, on_demand, queue, selectors, services, waiting_room
from .serializers import (
    AdmitOutSerializer,
    AppointmentCreateInputSerializer,
    AppointmentDetailOutSerializer,
    AppointmentOutSerializer,
    AppointmentRescheduleInputSerializer,
    CheckInOutSerializer,
    EmptyInputSerializer,
    FeedOutSerializer,
    OnDemandCreateInputSerializer,
    OnDemandOutSerializer,
    PositionOutSerializer,
    ScheduleInputSerializer,
    ScheduleOutSerializer,
    SlotOutSerializer,
    SlotQuerySerializer,
    WaitingRoomOutSerializer,
)


class ScheduleMeApi(APIView):
    """The signed-in doctor's schedule."""

    @api_doc("Get my schedule", errors={403: ["doctors_only"]}, responses=ScheduleOutSerializer)
    def get(self, request: Request) -> Response:
        schedule = services.schedule_ensure(doctor=request_user(request))
        return Response(ScheduleOutSerializer(schedule).data)

    @api_doc(
        "Set my schedule (lists given replace the stored ones)",
        errors={
            400: ["invalid", "invalid_exceptions", "invalid_time_zone", "invalid_weekly_hours"],
            403: ["doctors_only"],
        },
        request=ScheduleInputSerializer,
        responses=ScheduleOutSerializer,
    )
    def put(self, request: Request) -> Response:
        serializer = ScheduleInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        schedule = services.schedule_set(
            doctor=request_user(request),
            timezone_name=data.pop("timezone", None),
            weekly_hours=data.pop("weekly_hours", None),
            exceptions=data.pop("exceptions", None),
            **data,
        )
        return Response(ScheduleOutSerializer(schedule).data)


class DoctorSlotsApi(APIView):
    @api_doc(
        "List a doctor's free slots for local dates in the caller's time zone",
        parameters=[
            OpenApiParameter("start", str, required=True, description="first date, YYYY-MM-DD (in tz)"),
            OpenApiParameter(
                "end", str, required=True, description="last date, YYYY-MM-DD (in tz), ≤ 31 days"
            ),
            OpenApiParameter(
                "tz", str, required=True, description="IANA time zone the dates and times are in"
            ),
        ],
        errors={400: ["invalid", "invalid_range", "invalid_time_zone"], 404: ["doctor_not_found"]},
        responses=SlotOutSerializer(many=True),
    )
    def get(self, request: Request, doctor_id: int) -> Response:
        query = SlotQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        found, tz = selectors.slots_for_dates(
            doctor_id=doctor_id,
            first=query.validated_data["start"],
            last=query.validated_data["end"],
            tz_name=query.validated_data["tz"],
        )
        return Response(
            [{"start": s.astimezone(tz).isoformat(), "end": e.astimezone(tz).isoformat()} for s, e in found]
        )


class AppointmentListCreateApi(APIView):
    pagination_class = DefaultCursorPagination

    @api_doc("List my appointments (as patient or doctor)", responses=AppointmentOutSerializer(many=True))
    def get(self, request: Request) -> Response:
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(
            selectors.appointment_list(user=request_user(request)), request, view=self
        )
        audit.record(audited.APPOINTMENT_LIST, request=request)
        return paginator.get_paginated_response(AppointmentOutSerializer(page or [], many=True).data)

    @api_doc(
        "Book a slot: held while the payment is authorised",
        errors={
            400: [
                "cannot_contact_self",
                "invalid",
                "invalid_kind",
                "invalid_reason",
                "invalid_time_zone",
                "reason_too_long",
            ],
            403: ["blocked", "contact_not_allowed", "patients_only"],
            404: ["appointment_not_found", "conversation_not_found", "doctor_not_found", "user_not_found"],
            409: [
                "already_member",
                "consultation_open",
                "doctor_has_no_fee",
                "invalid_transition",
                "outside_availability",
                "slot_taken",
            ],
            422: ["e2ee_disabled", "e2ee_mandatory"],
            502: ["payment_provider_error"],
            503: ["payments_unavailable"],
        },
        request=AppointmentCreateInputSerializer,
        responses={201: dict},
    )
    def post(self, request: Request) -> Response:
        serializer = AppointmentCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = request_user(request)
        appointment = services.appointment_book(patient=user, **serializer.validated_data)
        fresh = selectors.appointment_get(user=user, appointment_id=appointment.pk)
        consultation = fresh.consultation
        return Response(
            {
                "appointment": AppointmentDetailOutSerializer(fresh).data,
                "payment": {
                    "provider": consultation.provider,
                    "payment_intent_id": consultation.payment_intent_id,
                    "client_secret": consultation.client_secret
                    if consultation.state == "requested"
                    else None,
                    "amount": consultation.price,
                    "currency": consultation.currency,
                }
                if consultation
                else None,
            },
            status=status.HTTP_201_CREATED,
        )


class AppointmentDetailApi(APIView):
    @api_doc(
        "Get an appointment",
        errors={404: ["appointment_not_found"]},
        responses=AppointmentDetailOutSerializer,
    )
    def get(self, request: Request, appointment_id: int) -> Response:
        appointment = selectors.appointment_get(user=request_user(request), appointment_id=appointment_id)
        audit.record(
            audited.APPOINTMENT_READ, request=request, object_type="appointment", object_id=appointment.pk
        )
        return Response(AppointmentDetailOutSerializer(appointment).data)


class AppointmentCancelApi(APIView):
    @api_doc(
        "Cancel an appointment (the policy decides the fee)",
        errors={
            400: ["invalid", "invalid_amount", "refund_too_large"],
            403: ["not_allowed"],
            404: ["appointment_not_found", "consultation_not_found"],
            409: [
                "cannot_cancel",
                "invalid_transition",
                "not_refundable",
                "nothing_to_refund",
                "too_late_to_cancel",
            ],
            502: ["payment_provider_error"],
            503: ["payments_unavailable"],
        },
        request=EmptyInputSerializer,
        responses=AppointmentDetailOutSerializer,
    )
    def post(self, request: Request, appointment_id: int) -> Response:
        EmptyInputSerializer(data=request.data or {}).is_valid(raise_exception=True)
        user = request_user(request)
        services.appointment_cancel(user=user, appointment_id=appointment_id)
        fresh = selectors.appointment_get(user=user, appointment_id=appointment_id)
        return Response(AppointmentDetailOutSerializer(fresh).data)


class AppointmentRescheduleApi(APIView):
    @api_doc(
        "Move an appointment to another free slot",
        errors={
            400: ["invalid"],
            404: ["appointment_not_found", "consultation_not_found", "doctor_not_found"],
            409: ["invalid_transition", "outside_availability", "slot_taken", "too_late_to_reschedule"],
        },
        request=AppointmentRescheduleInputSerializer,
        responses=AppointmentDetailOutSerializer,
    )
    def post(self, request: Request, appointment_id: int) -> Response:
        serializer = AppointmentRescheduleInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = request_user(request)
        services.appointment_reschedule(
            user=user, appointment_id=appointment_id, starts_at=serializer.validated_data["starts_at"]
        )
        fresh = selectors.appointment_get(user=user, appointment_id=appointment_id)
        return Response(AppointmentDetailOutSerializer(fresh).data)


class AppointmentCheckInApi(APIView):
    @api_doc(
        "Check in to my appointment (the patient; from a few minutes before the start; idempotent)",
        errors={
            400: ["invalid"],
            403: ["not_the_patient"],
            404: ["appointment_not_found"],
            409: [
                "already_admitted",
                "appointment_closed",
                "appointment_not_confirmed",
                "check_in_closed",
                "check_in_too_early",
            ],
        },
        request=EmptyInputSerializer,
        responses=CheckInOutSerializer,
    )
    def post(self, request: Request, appointment_id: int) -> Response:
        EmptyInputSerializer(data=request.data or {}).is_valid(raise_exception=True)
        user = request_user(request)
        appointment = waiting_room.check_in(user=user, appointment_id=appointment_id)
        return Response(
            {
                "appointment": AppointmentDetailOutSerializer(
                    selectors.appointment_get(user=user, appointment_id=appointment.pk)
                ).data,
                "position": queue.position_data(appointment=appointment),
            }
        )


class AppointmentPositionApi(APIView):
    @api_doc(
        "My place in the doctor's waiting room and the estimated wait (the patient)",
        errors={403: ["not_the_patient"], 404: ["appointment_not_found"], 409: ["not_waiting"]},
        responses=PositionOutSerializer,
    )
    def get(self, request: Request, appointment_id: int) -> Response:
        return Response(waiting_room.position(user=request_user(request), appointment_id=appointment_id))


class AppointmentAdmitApi(APIView):
    @api_doc(
        "Admit a checked-in patient (the doctor, any order): the consultation is captured and opened."
        " To start a call with it, use the socket frame waiting_room.admit.",
        errors={
            400: ["invalid"],
            403: ["not_allowed", "not_the_doctor"],
            404: ["appointment_not_found", "consultation_not_found"],
            409: [
                "appointment_closed",
                "invalid_transition",
                "patient_not_waiting",
                "payment_not_authorised",
                "payment_not_captured",
            ],
            502: ["payment_provider_error"],
            503: ["payments_unavailable"],
        },
        request=EmptyInputSerializer,
        responses=AdmitOutSerializer,
    )
    def post(self, request: Request, appointment_id: int) -> Response:
        EmptyInputSerializer(data=request.data or {}).is_valid(raise_exception=True)
        user = request_user(request)
        admitted = waiting_room.admit(user=user, appointment_id=appointment_id)
        return Response(
            AdmitOutSerializer(
                {
                    "appointment": selectors.appointment_get(user=user, appointment_id=appointment_id),
                    "consultation": admitted.consultation,
                }
            ).data
        )


class WaitingRoomApi(APIView):
    @api_doc(
        "My waiting room (the doctor): checked-in patients in order, with estimated waits",
        errors={403: ["doctors_only"]},
        responses=WaitingRoomOutSerializer,
    )
    def get(self, request: Request) -> Response:
        return Response(WaitingRoomOutSerializer(waiting_room.doctor_queue(user=request_user(request))).data)


ICS_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, no-store"}


class AppointmentIcsApi(APIView):
    @api_doc(
        "Download an appointment as an iCalendar (.ics) file",
        errors={404: ["appointment_not_found"]},
        responses={(200, "text/calendar"): bytes},
    )
    def get(self, request: Request, appointment_id: int) -> HttpResponse:
        user = request_user(request)
        appointment = selectors.appointment_get(user=user, appointment_id=appointment_id)
        audit.record(
            audited.APPOINTMENT_ICS, request=request, object_type="appointment", object_id=appointment.pk
        )
        response = HttpResponse(
            calendar.appointment_ics(appointment=appointment, viewer=user),
            content_type="text/calendar; charset=utf-8",
        )
        response["Content-Disposition"] = f'attachment; filename="appointment-{appointment.pk}.ics"'
        for key, value in ICS_HEADERS.items():
            response[key] = value
        return response


class CalendarFeedMeApi(APIView):
    @api_doc(
        "Create or rotate my private calendar feed URL (the old one stops working)",
        errors={403: ["doctors_only"]},
        request=EmptyInputSerializer,
        responses={201: FeedOutSerializer},
    )
    def post(self, request: Request) -> Response:
        EmptyInputSerializer(data=request.data or {}).is_valid(raise_exception=True)
        token = calendar.feed_rotate(doctor=request_user(request))
        url = request.build_absolute_uri(reverse("calendar-feed", kwargs={"token": token}))
        return Response({"url": url}, status=status.HTTP_201_CREATED)

    @api_doc("Revoke my calendar feed", errors={403: ["doctors_only"]}, responses={204: None})
    def delete(self, request: Request) -> Response:
        calendar.feed_revoke(doctor=request_user(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class CalendarFeedApi(APIView):
    """The feed itself: the token in the URL is the only credential (calendar apps send no header)."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []

    @api_doc(
        "A doctor's calendar feed (iCalendar)",
        parameters=[
            OpenApiParameter(
                "token",
                str,
                OpenApiParameter.PATH,
                pattern=r"^[A-Za-z0-9_-]{20,100}$",
                description="the feed's secret token (from POST calendar/feed)",
            )
        ],
        errors={404: ["feed_not_found"]},
        responses={(200, "text/calendar"): bytes},
    )
    def get(self, request: Request, token: str) -> HttpResponse:
        response = HttpResponse(
            calendar.feed_ics(token=token, client=audit_client(request)),
            content_type="text/calendar; charset=utf-8",
        )
        for key, value in ICS_HEADERS.items():
            response[key] = value
        return response


# --- On-demand queue by specialty -----------------------------------------------------------
class OnDemandListCreateApi(APIView):
    @api_doc(
        "List on-demand requests (at most 100): a patient's own, newest first; a doctor's queue "
        "(the open requests of their specialty, oldest first) then the ones they accepted",
        errors={403: ["doctors_only", "not_verified"]},
        responses=OnDemandOutSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        rows = on_demand.request_list(user=request_user(request))[: on_demand.LIST_LIMIT]
        audit.record(audited.ON_DEMAND_LIST, request=request)
        return Response(OnDemandOutSerializer(rows, many=True).data)

    @api_doc(
        "Ask for the first available doctor of a specialty",
        errors={
            400: ["invalid", "invalid_kind", "invalid_reason", "reason_too_long", "unknown_specialty"],
            403: ["patients_only"],
            409: ["request_open"],
        },
        request=OnDemandCreateInputSerializer,
        responses={201: OnDemandOutSerializer},
    )
    def post(self, request: Request) -> Response:
        serializer = OnDemandCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        created = on_demand.request_create(patient=request_user(request), **serializer.validated_data)
        return Response(OnDemandOutSerializer(created).data, status=status.HTTP_201_CREATED)


class OnDemandDetailApi(APIView):
    @api_doc("Get an on-demand request", errors={404: ["request_not_found"]}, responses=OnDemandOutSerializer)
    def get(self, request: Request, request_id: int) -> Response:
        found = on_demand.request_get(user=request_user(request), request_id=request_id)
        audit.record(audited.ON_DEMAND_READ, request=request, object_type="on_demand", object_id=found.pk)
        return Response(OnDemandOutSerializer(found).data)


class OnDemandAcceptApi(APIView):
    @api_doc(
        "Accept an on-demand request (exactly one doctor wins; it opens the consultation)",
        errors={
            400: ["cannot_contact_self", "invalid"],
            403: ["blocked", "contact_not_allowed", "doctors_only", "not_verified", "patients_only"],
            404: ["conversation_not_found", "doctor_not_found", "request_not_found", "user_not_found"],
            409: [
                "already_member",
                "consultation_open",
                "doctor_has_no_fee",
                "doctor_offline",
                "doctor_unavailable",
                "invalid_transition",
                "request_closed",
                "request_taken",
            ],
            422: ["e2ee_disabled", "e2ee_mandatory"],
            502: ["payment_provider_error"],
            503: ["payments_unavailable"],
        },
        request=EmptyInputSerializer,
        responses=OnDemandOutSerializer,
    )
    def post(self, request: Request, request_id: int) -> Response:
        EmptyInputSerializer(data=request.data or {}).is_valid(raise_exception=True)
        accepted = on_demand.request_accept(doctor=request_user(request), request_id=request_id)
        return Response(OnDemandOutSerializer(accepted).data)


class OnDemandCancelApi(APIView):
    @api_doc(
        "Withdraw my open on-demand request",
        errors={404: ["request_not_found"], 409: ["request_closed", "request_taken"]},
        request=EmptyInputSerializer,
        responses=OnDemandOutSerializer,
    )
    def post(self, request: Request, request_id: int) -> Response:
        EmptyInputSerializer(data=request.data or {}).is_valid(raise_exception=True)
        cancelled = on_demand.request_cancel(patient=request_user(request), request_id=request_id)
        return Response(OnDemandOutSerializer(cancelled).data)
