from django.urls import path

from . import apis

urlpatterns = [
    path("reports", apis.ReportListCreateApi.as_view(), name="report-list"),
    path("reports/<int:report_id>", apis.ReportDetailApi.as_view(), name="report-detail"),
    path("moderation/notices", apis.NoticeListApi.as_view(), name="moderation-notice-list"),
]
