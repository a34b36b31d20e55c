"""Accounts REST API: thin views (input serializer, one service call, output serializer)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiExample, OpenApiParameter
from rest_framework import generics, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from audit import actions as audited
from audit import client as audit_client
from audit import services as audit
from core import replica
from core.errors import ApplicationError
from core.openapi import api_doc
from core.pagination import DefaultCursorPagination
from core.throttling import ScopedRateThrottle

from . import firebase, keys, selectors, services
from .models import DoctorProfile
from .permissions import HasFirebaseToken, request_user
from .serializers import (
    DeviceInputSerializer,
    DeviceOutSerializer,
    DoctorListQuerySerializer,
    DoctorPublicSerializer,
    KeyBundlesOutSerializer,
    KeyCountsOutSerializer,
    KeysPutInputSerializer,
    KeysPutOutSerializer,
    MeUpdateInputSerializer,
    RegisterInputSerializer,
    SpecialtyListOutSerializer,
    UserOutSerializer,
)
from .throttling import FirebaseScopedRateThrottle

# The 400 codes of the profile fields that registration and account updates both validate.
PROFILE_FIELD_ERRORS = [
    "invalid_bio",
    "invalid_currency",
    "invalid_date_of_birth",
    "invalid_display_name",
    "invalid_emergency_contact_name",
    "invalid_fee",
    "invalid_jurisdiction",
    "invalid_languages",
    "invalid_licence_number",
    "invalid_phone_number",
    "invalid_sex",
    "missing_fields",
    "unknown_specialty",
]


class RegisterApi(APIView):
    """Register the signed-in phone number as a patient or doctor (idempotent)."""

    permission_classes = [HasFirebaseToken]
    throttle_classes = [FirebaseScopedRateThrottle]
    throttle_scope = "register"

    @api_doc(
        "Register the signed-in phone number",
        errors={
            400: [*PROFILE_FIELD_ERRORS, "invalid_role", "phone_number_required"],
            409: ["conflict", "licence_in_use", "phone_number_in_use", "role_mismatch"],
        },
        request=RegisterInputSerializer,
        responses={200: UserOutSerializer, 201: UserOutSerializer},
        description=(
            "The phone number is the verified ID token's, accepted when it is a possible "
            "international number (Firebase proved it by SMS; libphonenumber's validity metadata "
            "may lag). A typed `emergency_contact_phone` must be a valid number. "
            "Errors: `invalid_phone_number`, `phone_number_required`, `phone_number_in_use`."
        ),
    )
    def post(self, request: Request) -> Response:
        serializer = RegisterInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        token = request.auth
        assert isinstance(token, firebase.VerifiedToken)
        role = data.pop("role")
        display_name = data.pop("display_name")
        user, created = services.user_register(
            token=token, role=role, display_name=display_name, profile=data
        )
        audit.record(
            audited.AUTH_REGISTER, request=request, actor=user, object_type="user", object_id=user.pk
        )
        return Response(
            UserOutSerializer(user).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class MeApi(APIView):
    """The caller's own account: read, update, delete."""

    @api_doc("Get my account", responses=UserOutSerializer)
    def get(self, request: Request) -> Response:
        return Response(UserOutSerializer(request_user(request)).data)

    @api_doc(
        "Update my account",
        errors={
            400: [*PROFILE_FIELD_ERRORS, "read_only_field"],
            409: ["licence_in_use"],
        },
        request=MeUpdateInputSerializer,
        responses=UserOutSerializer,
    )
    def patch(self, request: Request) -> Response:
        serializer = MeUpdateInputSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        user = services.user_update(user=request_user(request), data=dict(serializer.validated_data))
        return Response(UserOutSerializer(user).data)

    @api_doc(
        "Delete my account",
        errors={403: ["permission_denied"], 503: ["auth_unavailable"]},
        responses={204: None},
    )
    def delete(self, request: Request) -> Response:
        user = request_user(request)
        services.user_delete(user=user, actor=user)
        audit.record(audited.USER_DELETE, request=request, actor=user, object_type="user", object_id=user.pk)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeExportApi(APIView):
    """Everything we hold about the caller, as JSON."""

    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "export"

    @api_doc(
        "Export my data",
        responses={200: dict},
        description=(
            "`format` (`healthchat-export/1`), `exported_at`, `user` (profile), `devices`, then "
            "one section per app: `messaging` (conversations and the messages the user sent, "
            "with their attachments' metadata), `uploads` (files uploaded and never attached: "
            "metadata and `download`, the request that gives a short-lived link), "
            "`consultations`, `calls` (every call the user took part in, as `GET /calls` shows it)."
        ),
    )
    def get(self, request: Request) -> Response:
        user = request_user(request)
        data = services.user_export(user=user)
        audit.record(audited.USER_EXPORT, request=request, object_type="user", object_id=user.pk)
        return Response(data)


class SpecialtyListApi(APIView):
    """The specialties doctors register with and patients search by (public, cached)."""

    # Public reference data: a doctor needs it on the registration form, before registering;
    # no credentials are read (an expired token does not matter), the anonymous rate applies.
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @api_doc(
        "List the medical specialties",
        description=(
            "Every specialty, sorted by name: `slug` is what `POST /auth/register` (doctor) "
            "and `GET /doctors?specialty=` take, `name` is for display. Public (no "
            "authentication); served from the cache, refreshed as soon as staff change the list; "
            "clients may cache it for 5 minutes (`Cache-Control: public, max-age=300`)."
        ),
        responses=SpecialtyListOutSerializer,
        examples=[
            OpenApiExample(
                "Specialties",
                value={
                    "results": [
                        {"slug": "cardiology", "name": "Cardiology"},
                        {"slug": "dermatology", "name": "Dermatology"},
                        {"slug": "general-practice", "name": "General practice"},
                    ]
                },
                response_only=True,
            )
        ],
    )
    def get(self, request: Request) -> Response:
        data = SpecialtyListOutSerializer({"results": selectors.specialty_list()}).data
        response = Response(data)
        response["Cache-Control"] = "public, max-age=300"
        return response


class DoctorCursorPagination(DefaultCursorPagination):
    ordering = "user_id"


class DoctorListApi(generics.ListAPIView[DoctorProfile]):
    """Verified doctors, searchable by specialty slug and name."""

    serializer_class = DoctorPublicSerializer
    pagination_class = DoctorCursorPagination

    @api_doc("Search doctors", parameters=[DoctorListQuerySerializer])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[DoctorProfile]:
        query = DoctorListQuerySerializer(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        # The directory tolerates replica lag (core/replica.py).
        return replica.using_replica(
            selectors.doctor_list(
                specialty=query.validated_data.get("specialty"), q=query.validated_data.get("q")
            ),
            user_id=self.request.user.pk if self.request.user.is_authenticated else None,
        )


class DoctorDetailApi(APIView):
    @api_doc(
        "Get a doctor's public profile", errors={404: ["doctor_not_found"]}, responses=DoctorPublicSerializer
    )
    def get(self, request: Request, doctor_id: int) -> Response:
        caller = request.user.pk if request.user.is_authenticated else None
        profile = replica.lag_tolerant(selectors.doctor_get, user_id=caller, doctor_id=doctor_id)
        return Response(DoctorPublicSerializer(profile).data)


class DeviceCreateApi(APIView):
    """Register this app instance (re-registration updates the same row)."""

    @api_doc(
        "Register this device",
        errors={
            400: [
                "device_identifier_required",
                "invalid_app_version",
                "invalid_fcm_token",
                "invalid_installation_id",
                "invalid_platform",
            ],
            409: ["device_conflict"],
        },
        request=DeviceInputSerializer,
        responses={200: DeviceOutSerializer, 201: DeviceOutSerializer},
    )
    def post(self, request: Request) -> Response:
        serializer = DeviceInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        device, created = services.device_register(
            user=request_user(request), client=audit_client.from_request(request), **serializer.validated_data
        )
        return Response(
            DeviceOutSerializer(device).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class DeviceDeleteApi(APIView):
    @api_doc("Remove a device", errors={404: ["device_not_found"]}, responses={204: None})
    def delete(self, request: Request, device_id: int) -> Response:
        services.device_delete(user=request_user(request), device_id=device_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


def _device_param(request: Request) -> int | None:
    """The caller's device from ``?device_id=`` or the ``X-Device-Id`` header."""
    raw = request.query_params.get("device_id") or request.headers.get("X-Device-Id")
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise ApplicationError(
            "invalid_device_id", "device_id must be a device id.", fields={"device_id": ["invalid"]}
        )
    return int(raw)


class KeysPutApi(APIView):
    """Upload or refill this device's public keys (end-to-end encryption; idempotent)."""

    @api_doc(
        "Upload this device's public keys",
        errors={
            404: ["device_not_found"],
            409: ["prekey_conflict"],
            422: ["invalid_key", "invalid_signature", "keys_incomplete", "too_many_prekeys"],
        },
        request=KeysPutInputSerializer,
        responses=KeysPutOutSerializer,
    )
    def put(self, request: Request) -> Response:
        serializer = KeysPutInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = _plain(serializer.validated_data)
        return Response(keys.device_keys_put(user=request_user(request), **data))


class KeyBundleApi(APIView):
    """Prekey bundles of a user's devices; each one-time key is handed out once."""

    throttle_classes = [FirebaseScopedRateThrottle]
    throttle_scope = "keys"

    @api_doc(
        "Get a user's prekey bundles",
        errors={
            400: ["invalid_device_id"],
            403: ["keys_not_allowed"],
            404: ["device_not_found", "user_not_found"],
        },
        parameters=[OpenApiParameter("device_id", int, description="only this device's bundle")],
        responses=KeyBundlesOutSerializer,
    )
    def get(self, request: Request, user_id: int) -> Response:
        device_id = _device_param_query(request)
        return Response(
            keys.key_bundles_take(requester=request_user(request), user_id=user_id, device_id=device_id)
        )


class KeyCountApi(APIView):
    """How many one-time prekeys the server still holds for one of the caller's devices."""

    @api_doc(
        "Count my device's one-time prekeys",
        errors={400: ["device_id_required", "invalid_device_id"], 404: ["device_not_found"]},
        parameters=[
            OpenApiParameter("device_id", int, required=True, description="or the X-Device-Id header")
        ],
        responses=KeyCountsOutSerializer,
    )
    def get(self, request: Request) -> Response:
        device_id = _device_param(request)
        if device_id is None:
            raise ApplicationError("device_id_required", "Give ?device_id= (or X-Device-Id).")
        return Response(selectors.prekey_count_get(user=request_user(request), device_id=device_id))


def _device_param_query(request: Request) -> int | None:
    """``?device_id=`` only (here it names the other user's device, not the caller's)."""
    raw = request.query_params.get("device_id")
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise ApplicationError(
            "invalid_device_id", "device_id must be a device id.", fields={"device_id": ["invalid"]}
        )
    return int(raw)


def _plain(value: Any) -> Any:
    """Validated data as plain dicts and lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
