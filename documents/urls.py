from django.urls import path

from . import apis

urlpatterns = [
    path("documents", apis.DocumentListCreateApi.as_view(), name="document-list"),
    path("documents/<int:document_id>", apis.DocumentDetailApi.as_view(), name="document-detail"),
    path("documents/<int:document_id>/content", apis.DocumentContentApi.as_view(), name="document-content"),
]
