"""The clinical record's REST API: visit notes, prescriptions, the public prescription check.

Thin views: one service or selector call each; every read of a note or a prescription is in
the audit log (``visit_note.*``, ``prescription.*``).
"""

from __future__ import annotations

from typing import Any

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
from core.throttling import ScopedRateThrottle
from payments import selectors as payment_selectors

from . import selectors, services
from .serializers import (
    AmendmentInputSerializer,
    AmendmentOutSerializer,
    NoteInputSerializer,
    NoteOutSerializer,
    NoteSignInputSerializer,
    PrescriptionCancelInputSerializer,
    PrescriptionInputSerializer,
    PrescriptionOutSerializer,
    VerificationOutSerializer,
)

NOTE_FIELD_ERRORS = ["invalid", "field_too_long", "invalid_characters", "invalid_codes"]
PRESCRIPTION_FIELD_ERRORS = [
    "invalid",
    "field_too_long",
    "invalid_characters",
    "invalid_jurisdiction",
    "medication_required",
    "dose_required",
    "frequency_required",
    "quantity_required",
    "quantity_out_of_range",
    "repeats_out_of_range",
]


def _note_out(request: Request, note_id: int) -> dict[str, Any]:
    note = selectors.note_get(user=request_user(request), note_id=note_id)
    return dict(NoteOutSerializer(note).data)


# --- Visit notes ------------------------------------------------------------------------------
class ConsultationNotesApi(APIView):
    @api_doc(
        "The consultation's visit note as I may see it (0 or 1): its doctor, draft or signed; "
        "its patient, once signed and shared",
        errors={404: ["consultation_not_found"]},
        responses=NoteOutSerializer(many=True),
    )
    def get(self, request: Request, consultation_id: int) -> Response:
        notes = selectors.notes_for_consultation(user=request_user(request), consultation_id=consultation_id)
        audit.record(
            audited.VISIT_NOTE_LIST, request=request, object_type="consultation", object_id=consultation_id
        )
        return Response(NoteOutSerializer(notes, many=True).data)

    @api_doc(
        "Write the consultation's visit note (a draft; the consultation's doctor, once accepted)",
        errors={
            400: NOTE_FIELD_ERRORS,
            403: ["not_the_doctor"],
            404: ["consultation_not_found", "note_not_found"],
            409: ["consultation_not_eligible", "note_exists"],
        },
        request=NoteInputSerializer,
        responses={201: NoteOutSerializer},
    )
    def post(self, request: Request, consultation_id: int) -> Response:
        serializer = NoteInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        note = services.note_create(
            doctor=request_user(request),
            consultation_id=consultation_id,
            data=dict(serializer.validated_data),
            client=audit_client(request),
        )
        return Response(_note_out(request, note.pk), status=status.HTTP_201_CREATED)


class NoteDetailApi(APIView):
    @api_doc(
        "Read a visit note with its amendments (audited)",
        errors={404: ["note_not_found"]},
        responses=NoteOutSerializer,
    )
    def get(self, request: Request, note_id: int) -> Response:
        body = _note_out(request, note_id)
        audit.record(audited.VISIT_NOTE_READ, request=request, object_type="visit_note", object_id=note_id)
        return Response(body)

    @api_doc(
        "Change a draft note (the fields given); a signed note is amended instead",
        errors={
            400: NOTE_FIELD_ERRORS,
            403: ["not_the_doctor"],
            404: ["note_not_found"],
            409: ["note_signed"],
        },
        request=NoteInputSerializer,
        responses=NoteOutSerializer,
    )
    def patch(self, request: Request, note_id: int) -> Response:
        serializer = NoteInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.note_update(
            doctor=request_user(request),
            note_id=note_id,
            data=dict(serializer.validated_data),
            client=audit_client(request),
        )
        return Response(_note_out(request, note_id))

    @api_doc(
        "Discard a draft note (a signed note is never deleted)",
        errors={403: ["not_the_doctor"], 404: ["note_not_found"], 409: ["note_signed"]},
        responses={204: None},
    )
    def delete(self, request: Request, note_id: int) -> Response:
        services.note_delete(doctor=request_user(request), note_id=note_id, client=audit_client(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class NoteSignApi(APIView):
    @api_doc(
        "Sign a draft note: final from now on (optionally shared with the patient at once)",
        errors={
            400: ["invalid", "note_empty"],
            403: ["not_the_doctor"],
            404: ["note_not_found"],
            409: ["note_signed"],
        },
        request=NoteSignInputSerializer,
        responses=NoteOutSerializer,
    )
    def post(self, request: Request, note_id: int) -> Response:
        serializer = NoteSignInputSerializer(data=request.data or {})
        serializer.is_valid(raise_exception=True)
        services.note_sign(
            doctor=request_user(request),
            note_id=note_id,
            share=serializer.validated_data["share"],
            client=audit_client(request),
        )
        return Response(_note_out(request, note_id))


class NoteShareApi(APIView):
    @api_doc(
        "Share a signed note with the patient (idempotent; the patient hears visit_note.shared)",
        errors={403: ["not_the_doctor"], 404: ["note_not_found"], 409: ["note_not_signed"]},
        request=None,
        responses=NoteOutSerializer,
    )
    def post(self, request: Request, note_id: int) -> Response:
        services.note_share(doctor=request_user(request), note_id=note_id, client=audit_client(request))
        return Response(_note_out(request, note_id))


class NoteAmendmentsApi(APIView):
    @api_doc(
        "Amend a signed note (who, when, why, what; kept beside it, never changed)",
        errors={
            400: ["invalid", "field_too_long", "invalid_characters", "reason_required", "text_required"],
            403: ["not_the_doctor"],
            404: ["note_not_found"],
            409: ["note_not_signed"],
        },
        request=AmendmentInputSerializer,
        responses={201: AmendmentOutSerializer},
    )
    def post(self, request: Request, note_id: int) -> Response:
        serializer = AmendmentInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        amendment = services.amendment_add(
            doctor=request_user(request),
            note_id=note_id,
            reason=serializer.validated_data.get("reason"),
            text=serializer.validated_data.get("text"),
            client=audit_client(request),
        )
        return Response(AmendmentOutSerializer(amendment).data, status=status.HTTP_201_CREATED)


# --- Prescriptions ----------------------------------------------------------------------------
class ConsultationPrescriptionsApi(APIView):
    pagination_class = DefaultCursorPagination

    @api_doc(
        "The consultation's prescriptions (issued and cancelled, newest first; cursor pages)",
        errors={404: ["consultation_not_found"]},
        responses=PrescriptionOutSerializer(many=True),
    )
    def get(self, request: Request, consultation_id: int) -> Response:
        user = request_user(request)
        payment_selectors.consultation_get(user=user, consultation_id=consultation_id)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(
            selectors.prescription_list(user=user, consultation_id=consultation_id), request, view=self
        )
        audit.record(
            audited.PRESCRIPTION_LIST, request=request, object_type="consultation", object_id=consultation_id
        )
        return paginator.get_paginated_response(PrescriptionOutSerializer(page or [], many=True).data)

    @api_doc(
        "Issue a prescription to the consultation's patient (its doctor: verified, licence valid, "
        "within their jurisdiction; an open consultation or one completed within the window)",
        errors={
            400: PRESCRIPTION_FIELD_ERRORS,
            403: ["doctor_not_verified", "licence_expired", "not_the_doctor", "outside_jurisdiction"],
            404: ["consultation_not_found"],
            409: ["consultation_not_eligible"],
        },
        request=PrescriptionInputSerializer,
        responses={201: PrescriptionOutSerializer},
    )
    def post(self, request: Request, consultation_id: int) -> Response:
        serializer = PrescriptionInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        prescription = services.prescription_issue(
            doctor=request_user(request),
            consultation_id=consultation_id,
            data=dict(serializer.validated_data),
            client=audit_client(request),
        )
        return Response(PrescriptionOutSerializer(prescription).data, status=status.HTTP_201_CREATED)


class PrescriptionListApi(APIView):
    pagination_class = DefaultCursorPagination

    @api_doc(
        "My prescriptions (received as patient or written as doctor), newest first",
        responses=PrescriptionOutSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(
            selectors.prescription_list(user=request_user(request)), request, view=self
        )
        audit.record(audited.PRESCRIPTION_LIST, request=request)
        return paginator.get_paginated_response(PrescriptionOutSerializer(page or [], many=True).data)


class PrescriptionDetailApi(APIView):
    @api_doc(
        "Read a prescription (its patient or prescriber; audited)",
        errors={404: ["prescription_not_found"]},
        responses=PrescriptionOutSerializer,
    )
    def get(self, request: Request, prescription_id: int) -> Response:
        p = selectors.prescription_get(user=request_user(request), prescription_id=prescription_id)
        audit.record(audited.PRESCRIPTION_READ, request=request, object_type="prescription", object_id=p.pk)
        return Response(PrescriptionOutSerializer(p).data)


class PrescriptionCancelApi(APIView):
    @api_doc(
        "Cancel a prescription with a reason (its prescriber; never edited, never deleted)",
        errors={
            400: ["invalid", "cancel_reason_required", "field_too_long", "invalid_characters"],
            403: ["not_the_doctor"],
            404: ["prescription_not_found"],
            409: ["already_cancelled"],
        },
        request=PrescriptionCancelInputSerializer,
        responses=PrescriptionOutSerializer,
    )
    def post(self, request: Request, prescription_id: int) -> Response:
        serializer = PrescriptionCancelInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        p = services.prescription_cancel(
            doctor=request_user(request),
            prescription_id=prescription_id,
            reason=serializer.validated_data.get("reason"),
            client=audit_client(request),
        )
        fresh = selectors.prescription_get(user=request_user(request), prescription_id=p.pk)
        return Response(PrescriptionOutSerializer(fresh).data)


class PrescriptionVerifyApi(APIView):
    """The pharmacist's check: no sign-in; the code (from the document or its QR) is the only
    credential; throttled per client address."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "prescription_verify"

    @api_doc(
        "Verify a prescription (public): valid or cancelled, its number, issue time and prescriber "
        "only; never the patient or the medication",
        parameters=[
            OpenApiParameter(
                "code",
                str,
                OpenApiParameter.PATH,
                pattern=r"^[0-9A-Za-z -]{16,40}$",
                description="the verification code printed on the prescription (16 characters, "
                "Crockford base32; case, dashes and spaces are ignored)",
            )
        ],
        errors={404: ["prescription_not_found"]},
        responses=VerificationOutSerializer,
    )
    def get(self, request: Request, code: str) -> Response:
        p, found = selectors.prescription_verify(code=code)
        audit.record(
            audited.PRESCRIPTION_VERIFY,
            client=audit_client(request),
            object_type="prescription",
            object_id=p.pk,
        )
        return Response(
            {
                "status": found.status,
                "number": found.number,
                "issued_at": found.issued_at.isoformat(),
                "prescriber": {
                    "name": found.prescriber_name,
                    "licence_number": found.prescriber_licence_number,
                    "jurisdiction": found.jurisdiction,
                },
            }
        )
