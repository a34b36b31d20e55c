"""Staff and documents: a read-only, audited admin; regenerating needs its own permission and is
audited. The list read's query count does not grow with the rows."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from accounts.models import User
from audit.models import AuditEntry
from conftest import unique_phone
from documents.models import Document
from documents.tests.helpers import paid, people

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/documents/document/"


def _staff(*codenames: str) -> Client:
    user = User.objects.create_user(
        unique_phone(), "correct horse battery", is_staff=True, display_name="Stella Staff"
    )
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="documents", codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return client


def test_staff_regenerate_with_the_permission_and_it_is_audited(
    django_capture_on_commit_callbacks: Any,
) -> None:
    patient, doctor = people()
    with django_capture_on_commit_callbacks(execute=True):
        consultation = paid(patient, doctor)
    receipt = Document.objects.get(consultation=consultation)
    first = receipt.sha256

    viewer = _staff("view_document")
    page = viewer.get(CHANGELIST)
    assert page.status_code == 200
    assert b"regenerate" not in page.content
    assert AuditEntry.objects.filter(action="admin.view", object_type="documents.document").exists()
    refused = viewer.post(CHANGELIST, {"action": "regenerate", "_selected_action": [receipt.pk]})
    assert refused.status_code in (200, 302)
    receipt.refresh_from_db()
    assert receipt.status == "ready"

    allowed = _staff("view_document", "regenerate_document")
    with django_capture_on_commit_callbacks(execute=True):
        done = allowed.post(CHANGELIST, {"action": "regenerate", "_selected_action": [receipt.pk]})
    assert done.status_code == 302
    receipt.refresh_from_db()
    assert (receipt.status, receipt.sha256) == ("ready", first)  # the same record, the same file
    assert AuditEntry.objects.filter(action="document.regenerate", object_id=str(receipt.pk)).count() == 1


def test_listing_documents_takes_the_same_queries_for_one_row_or_many(
    client_for: Any, django_assert_max_num_queries: Any, django_capture_on_commit_callbacks: Any
) -> None:
    patient, doctor = people()
    with django_capture_on_commit_callbacks(execute=True):
        paid(patient, doctor)
    api = client_for(patient)
    api.get("/api/v1/documents")  # the caller's own first-request reads (registration, caches)
    with django_assert_max_num_queries(6) as one:
        assert len(api.get("/api/v1/documents").json()["results"]) == 1
    from documents import services

    for kind in ("consultation_summary",):
        consultation_id = Document.objects.get().consultation_id
        services.document_request(user=patient, kind=kind, consultation_id=consultation_id)
        services.document_request(user=patient, kind=kind, consultation_id=consultation_id, include_chat=True)
    with django_assert_max_num_queries(len(one.captured_queries)):
        assert len(api.get("/api/v1/documents").json()["results"]) == 3
