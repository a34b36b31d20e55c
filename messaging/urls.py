from django.urls import path

from . import annotation_apis, apis, search_api

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
    path(
        "messages/<int:message_id>/reactions", annotation_apis.ReactionAddApi.as_view(), name="reaction-add"
    ),
    path(
        "messages/<int:message_id>/reactions/<str:emoji>",
        annotation_apis.ReactionRemoveApi.as_view(),
        name="reaction-remove",
    ),
    path("messages/<int:message_id>/versions", apis.MessageVersionsApi.as_view(), name="message-versions"),
    path("messages/<int:message_id>/pin", annotation_apis.MessagePinApi.as_view(), name="message-pin"),
    path("mentions", annotation_apis.MentionListApi.as_view(), name="mention-list"),
    path("search/messages", search_api.MessageSearchApi.as_view(), name="message-search"),
    path("blocks", apis.BlockCreateApi.as_view(), name="block-create"),
    path("blocks/<int:user_id>", apis.BlockDeleteApi.as_view(), name="block-delete"),
]
