from django.urls import path

from . import apis

urlpatterns = [
    path(
        "consultations/<int:consultation_id>/rating",
        apis.ConsultationRatingApi.as_view(),
        name="consultation-rating",
    ),
    path(
        "consultations/<int:consultation_id>/rating/reply",
        apis.ConsultationRatingReplyApi.as_view(),
        name="consultation-rating-reply",
    ),
    path("doctors/<int:doctor_id>/ratings", apis.DoctorRatingListApi.as_view(), name="doctor-rating-list"),
]
