from django.urls import path

from . import apis

urlpatterns = [
    path(
        "consultations/<int:consultation_id>/notes",
        apis.ConsultationNotesApi.as_view(),
        name="consultation-notes",
    ),
    path("notes/<int:note_id>", apis.NoteDetailApi.as_view(), name="note-detail"),
    path("notes/<int:note_id>/sign", apis.NoteSignApi.as_view(), name="note-sign"),
    path("notes/<int:note_id>/share", apis.NoteShareApi.as_view(), name="note-share"),
    path("notes/<int:note_id>/amendments", apis.NoteAmendmentsApi.as_view(), name="note-amendments"),
    path(
        "consultations/<int:consultation_id>/prescriptions",
        apis.ConsultationPrescriptionsApi.as_view(),
        name="consultation-prescriptions",
    ),
    path("prescriptions", apis.PrescriptionListApi.as_view(), name="prescription-list"),
    path(
        "prescriptions/<int:prescription_id>",
        apis.PrescriptionDetailApi.as_view(),
        name="prescription-detail",
    ),
    path(
        "prescriptions/<int:prescription_id>/cancel",
        apis.PrescriptionCancelApi.as_view(),
        name="prescription-cancel",
    ),
    path("prescriptions/verify/<str:code>", apis.PrescriptionVerifyApi.as_view(), name="prescription-verify"),
]
