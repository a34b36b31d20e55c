from django.urls import path

from . import apis

urlpatterns = [
    path("calls", apis.CallListApi.as_view(), name="call-list"),
    path("calls/turn-credentials", apis.TurnCredentialsApi.as_view(), name="call-turn-credentials"),
    path("calls/<int:call_id>", apis.CallDetailApi.as_view(), name="call-detail"),
]
