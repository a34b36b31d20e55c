from django.urls import path

from . import apis

urlpatterns = [
    path("schedule", apis.ScheduleMeApi.as_view(), name="schedule-me"),
    path("doctors/<int:doctor_id>/slots", apis.DoctorSlotsApi.as_view(), name="doctor-slots"),
    path("appointments", apis.AppointmentListCreateApi.as_view(), name="appointment-list"),
    path("appointments/<int:appointment_id>", apis.AppointmentDetailApi.as_view(), name="appointment-detail"),
    path(
        "appointments/<int:appointment_id>/cancel",
        apis.AppointmentCancelApi.as_view(),
        name="appointment-cancel",
    ),
    path(
        "appointments/<int:appointment_id>/reschedule",
        apis.AppointmentRescheduleApi.as_view(),
        name="appointment-reschedule",
    ),
    path(
        "appointments/<int:appointment_id>/check-in",
        apis.AppointmentCheckInApi.as_view(),
        name="appointment-check-in",
    ),
    path(
        "appointments/<int:appointment_id>/position",
        apis.AppointmentPositionApi.as_view(),
        name="appointment-position",
    ),
    path(
        "appointments/<int:appointment_id>/admit",
        apis.AppointmentAdmitApi.as_view(),
        name="appointment-admit",
    ),
    path("waiting-room", apis.WaitingRoomApi.as_view(), name="waiting-room"),
    path("appointments/<int:appointment_id>/ics", apis.AppointmentIcsApi.as_view(), name="appointment-ics"),
    path("calendar/feed", apis.CalendarFeedMeApi.as_view(), name="calendar-feed-me"),
    path("calendar/feeds/<str:token>/calendar.ics", apis.CalendarFeedApi.as_view(), name="calendar-feed"),
    path("on-demand", apis.OnDemandListCreateApi.as_view(), name="on-demand-list"),
    path("on-demand/<int:request_id>", apis.OnDemandDetailApi.as_view(), name="on-demand-detail"),
    path("on-demand/<int:request_id>/accept", apis.OnDemandAcceptApi.as_view(), name="on-demand-accept"),
    path("on-demand/<int:request_id>/cancel", apis.OnDemandCancelApi.as_view(), name="on-demand-cancel"),
]
