from django.urls import path

from . import apis

urlpatterns = [
    path("consultations", apis.ConsultationListCreateApi.as_view(), name="consultation-list"),
    path(
        "consultations/<int:consultation_id>",
        apis.ConsultationDetailApi.as_view(),
        name="consultation-detail",
    ),
    path(
        "consultations/<int:consultation_id>/accept",
        apis.ConsultationAcceptApi.as_view(),
        name="consultation-accept",
    ),
    path(
        "consultations/<int:consultation_id>/decline",
        apis.ConsultationDeclineApi.as_view(),
        name="consultation-decline",
    ),
    path(
        "consultations/<int:consultation_id>/start",
        apis.ConsultationStartApi.as_view(),
        name="consultation-start",
    ),
    path(
        "consultations/<int:consultation_id>/complete",
        apis.ConsultationCompleteApi.as_view(),
        name="consultation-complete",
    ),
    path(
        "consultations/<int:consultation_id>/cancel",
        apis.ConsultationCancelApi.as_view(),
        name="consultation-cancel",
    ),
    path("availability", apis.AvailabilityMeApi.as_view(), name="availability-me"),
    path(
        "doctors/<int:doctor_id>/availability",
        apis.DoctorAvailabilityApi.as_view(),
        name="doctor-availability",
    ),
    path("payouts", apis.PayoutListApi.as_view(), name="payout-list"),
    path("payouts/onboarding", apis.PayoutOnboardingApi.as_view(), name="payout-onboarding"),
    path("payments/stripe/webhook", apis.StripeWebhookApi.as_view(), name="stripe-webhook"),
]
