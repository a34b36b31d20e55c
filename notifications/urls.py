from django.urls import path

from . import apis

urlpatterns = [
    path(
        "conversations/<int:conversation_id>/mute",
        apis.ConversationMuteApi.as_view(),
        name="conversation-mute",
    ),
    path("notifications/preferences", apis.PushPreferenceApi.as_view(), name="push-preferences"),
]
