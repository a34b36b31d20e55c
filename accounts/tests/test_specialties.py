"""GET /api/v1/specialties: the slugs doctor registration and search take; public, cached,
invalidated whenever staff (admin), the ``seed_specialties`` command or a service change them."""

from __future__ import annotations

import time

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from accounts import selectors, services
from accounts.models import Specialty
from conftest import unique_phone

pytestmark = pytest.mark.django_db

URL = "/api/v1/specialties"
SEEDED = {
    "general-practice": "General practice",
    "paediatrics": "Paediatrics",
    "cardiology": "Cardiology",
    "dermatology": "Dermatology",
    "gynaecology": "Gynaecology and obstetrics",
    "psychiatry": "Psychiatry",
    "internal-medicine": "Internal medicine",
    "endocrinology": "Endocrinology",
    "neurology": "Neurology",
    "orthopaedics": "Orthopaedics",
}


@pytest.fixture(autouse=True)
def cold_cache() -> None:
    """The cache outlives each test's rolled-back database: start every test cold."""
    cache.delete(selectors.SPECIALTIES_VERSION_KEY)


def listed(authorization: str | None = None) -> list[dict[str, str]]:
    client = APIClient()
    if authorization:
        client.credentials(HTTP_AUTHORIZATION=authorization)
    response = client.get(URL)
    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "public, max-age=300"
    body = response.json()
    assert set(body) == {"results"}
    return list(body["results"])


def test_anyone_lists_the_specialties_sorted_by_name(make_token) -> None:
    results = listed()
    assert {item["slug"]: item["name"] for item in results} == SEEDED
    assert [item["name"] for item in results] == sorted(SEEDED.values())
    assert all(set(item) == {"slug", "name"} for item in results)
    # Signed in to Firebase but not registered yet (a doctor filling in the registration form),
    # or with an expired token: the same answer, no authentication is attempted.
    now = int(time.time())
    for token in (
        make_token(phone_number=unique_phone()),
        make_token(phone_number=unique_phone(), lifetime=-60, iat=now - 3660, auth_time=now - 3660),
    ):
        assert listed(f"Bearer {token}") == results


def test_a_listed_slug_registers_a_doctor_and_filters_the_search(make_token) -> None:
    slug = listed()[0]["slug"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(phone_number=unique_phone())}")
    body = {
        "role": "doctor",
        "display_name": "Dr Listed",
        "specialty": slug,
        "licence_number": f"GMC-{unique_phone()[-7:]}",
        "jurisdiction": "GB",
    }
    response = client.post("/api/v1/auth/register", body, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["doctor_profile"]["specialty"]["slug"] == slug
    assert client.get(f"/api/v1/doctors?specialty={slug}").status_code == 200


def test_served_from_the_cache_without_a_query(django_assert_num_queries) -> None:
    first = listed()
    with django_assert_num_queries(0):
        assert listed() == first


@pytest.fixture
def staff_client(django_user_model) -> Client:
    client = Client()
    client.force_login(django_user_model.objects.create_superuser(unique_phone(), "correct horse battery"))
    return client


def test_admin_changes_are_listed_at_once(staff_client, django_capture_on_commit_callbacks) -> None:
    listed()  # cached
    with django_capture_on_commit_callbacks(execute=True):
        added = staff_client.post(
            reverse("admin:accounts_specialty_add"), {"slug": "oncology", "name": "Oncology"}
        )
    assert added.status_code == 302, added.content
    assert {"slug": "oncology", "name": "Oncology"} in listed()

    oncology = Specialty.objects.get(slug="oncology")
    with django_capture_on_commit_callbacks(execute=True):
        renamed = staff_client.post(
            reverse("admin:accounts_specialty_change", args=[oncology.pk]),
            {"slug": "oncology", "name": "Clinical oncology"},
        )
    assert renamed.status_code == 302, renamed.content
    assert {"slug": "oncology", "name": "Clinical oncology"} in listed()

    with django_capture_on_commit_callbacks(execute=True):
        deleted = staff_client.post(
            reverse("admin:accounts_specialty_delete", args=[oncology.pk]), {"post": "yes"}
        )
    assert deleted.status_code == 302, deleted.content
    assert "oncology" not in {item["slug"] for item in listed()}

    neurology = Specialty.objects.get(slug="neurology")
    with django_capture_on_commit_callbacks(execute=True):
        bulk = staff_client.post(
            reverse("admin:accounts_specialty_changelist"),
            {"action": "delete_selected", "_selected_action": [neurology.pk], "post": "yes"},
        )
    assert bulk.status_code == 302, bulk.content
    assert "neurology" not in {item["slug"] for item in listed()}


def test_seed_specialties_command_and_services_invalidate(django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        services.specialty_delete(specialty=Specialty.objects.get(slug="psychiatry"))
    assert "psychiatry" not in {item["slug"] for item in listed()}
    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_specialties", stdout=open("/dev/null", "w"))  # noqa: SIM115
    assert {"slug": "psychiatry", "name": "Psychiatry"} in listed()
    with django_capture_on_commit_callbacks(execute=True):
        services.specialty_save(specialty=Specialty(slug="geriatrics", name="Geriatrics"))
    assert {"slug": "geriatrics", "name": "Geriatrics"} in listed()


def test_rolled_back_change_leaves_the_cache_alone(django_capture_on_commit_callbacks) -> None:
    """Invalidation runs on commit: a change that rolls back does not empty the cache (and a
    reader cannot cache the uncommitted state)."""
    cached = listed()
    version = cache.get(selectors.SPECIALTIES_VERSION_KEY)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.specialty_save(specialty=Specialty(slug="uncommitted", name="Uncommitted"))
    assert len(callbacks) == 1
    assert cache.get(selectors.SPECIALTIES_VERSION_KEY) == version
    assert listed() == cached


def test_in_the_openapi_schema_with_summary_and_example() -> None:
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    operation = schema["paths"]["/api/v1/specialties"]["get"]
    assert operation["summary"]
    assert operation["security"] == [{}]  # no authentication
    content = operation["responses"]["200"]["content"]["application/json"]
    example = next(iter(content["examples"].values()))["value"]
    assert example["results"][0] == {"slug": "cardiology", "name": "Cardiology"}
