from django.urls import path

from . import apis

urlpatterns = [
    path("scheduled-messages", apis.ScheduledListCreateApi.as_view(), name="scheduled-list"),
    path("scheduled-messages/<int:scheduled_id>", apis.ScheduledDetailApi.as_view(), name="scheduled-detail"),
]
