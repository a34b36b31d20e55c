from django.urls import path

from . import apis, search_api

urlpatterns = [
    path("conversations", apis.ConversationListCreateApi.as_view(), name="conversation-list"),
    path(
        "conversations/<int:conversation_id>",
        apis.ConversationDetailApi.as_view(),
        name="conversation-detail",
    ),
    path(
        "conversations/<int:conversation_id>/messages",
        apis.MessageHistoryApi.as_view(),
        name="message-history",
    ),
    path("attachments", apis.AttachmentUploadApi.as_view(), name="attachment-upload"),
    path("attachments/<int:attachment_id>", apis.AttachmentDetailApi.as_view(), name="attachment-detail"),
    path(
        "attachments/<int:attachment_id>/content",
        apis.AttachmentContentApi.as_view(),
        name="attachment-content",
    ),
    path("search/messages", search_api.MessageSearchApi.as_view(), name="message-search"),
    path("blocks", apis.BlockCreateApi.as_view(), name="block-create"),
    path("blocks/<int:user_id>", apis.BlockDeleteApi.as_view(), name="block-delete"),
]
