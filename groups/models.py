"""Groups are conversations of kind ``group`` (messaging owns the rows); this proxy gives the
admin its own page, and Django its permissions (``groups.view_groupconversation``...), which it
creates only for apps that have a models module."""

from __future__ import annotations

from messaging.models import Conversation


class GroupConversation(Conversation):
    class Meta:
        proxy = True
        verbose_name = "group"
        verbose_name_plural = "groups"
