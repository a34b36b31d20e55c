from django.urls import path

from . import apis

urlpatterns = [
    path("groups", apis.GroupCreateApi.as_view(), name="group-create"),
    path("groups/<int:group_id>", apis.GroupDetailApi.as_view(), name="group-detail"),
    path("groups/<int:group_id>/members", apis.GroupMemberAddApi.as_view(), name="group-member-add"),
    path("groups/<int:group_id>/members/<int:user_id>", apis.GroupMemberApi.as_view(), name="group-member"),
    path("groups/<int:group_id>/leave", apis.GroupLeaveApi.as_view(), name="group-leave"),
    path("groups/<int:group_id>/avatar", apis.GroupAvatarApi.as_view(), name="group-avatar"),
]
