"""What schemathesis found in our API (tests/test_api_fuzz.py), each pinned by a direct test."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.tests.factories import DoctorFactory, PatientFactory
from accounts.tests.helpers import assert_error
from messaging.tests.factories import pair

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(make_token: Callable[..., str]) -> APIClient:
    patient = PatientFactory.create()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(patient.firebase_uid, patient.phone_number)}")
    api.user = patient  # type: ignore[attr-defined]
    return api


def _cursor(**tokens: str) -> str:
    from urllib.parse import urlencode

    return base64.b64encode(urlencode(tokens).encode()).decode()


def test_a_null_character_in_a_search_is_a_400_not_a_500(client: APIClient) -> None:
    DoctorFactory.create()
    error = assert_error(client.get("/api/v1/doctors", {"q": "heart\x00"}), 400, "invalid")
    assert error["fields"]["q"][0]["code"] == "null_characters_not_allowed"


@pytest.mark.parametrize("limit", ["abc", "0", "-1", "1.5", "", "٣"])
def test_a_malformed_page_size_is_refused(client: APIClient, limit: str) -> None:
    for url in ("/api/v1/conversations", "/api/v1/calls", "/api/v1/doctors", "/api/v1/consultations"):
        error = assert_error(client.get(url, {"limit": limit}), 400, "invalid")
        assert "limit" in error["fields"], url


def test_a_large_page_size_is_capped(client: APIClient) -> None:
    assert client.get("/api/v1/doctors", {"limit": "100000"}).status_code == 200


@pytest.mark.parametrize(
    "cursor",
    [
        "~",  # not base64
        _cursor(p="not-a-number"),  # well-formed, with a position the ordering field cannot hold
        _cursor(o="-5"),
    ],
)
def test_a_cursor_the_server_did_not_issue_is_a_400(client: APIClient, cursor: str) -> None:
    for url in ("/api/v1/calls", "/api/v1/doctors", "/api/v1/consultations"):
        error = assert_error(client.get(url, {"cursor": cursor}), 400, "invalid")
        assert error["fields"]["cursor"][0]["code"] == "invalid_cursor", url


def test_a_forged_cursor_on_conversations_is_a_400(client: APIClient) -> None:
    pair()
    cursor = _cursor(p="not-a-date")
    error = assert_error(client.get("/api/v1/conversations", {"cursor": cursor}), 400, "invalid")
    assert error["fields"]["cursor"][0]["code"] == "invalid_cursor"


@pytest.mark.parametrize(
    ("url", "params"),
    [
        ("/api/v1/calls", {"conversation_id": ""}),
        ("/api/v1/conversations/1/messages", {"after_seq": ""}),
    ],
)
def test_an_empty_query_value_is_refused_not_read_as_absent(
    client: APIClient, url: str, params: dict[str, str]
) -> None:
    assert_error(client.get(url, params), 400, "invalid")


def test_too_many_query_parameters_is_a_400_not_a_500(client: APIClient) -> None:
    query = "&".join(f"p{i}=1" for i in range(1200))  # above DATA_UPLOAD_MAX_NUMBER_FIELDS
    assert_error(client.get(f"/api/v1/calls?{query}"), 400, "bad_request")


def test_bodies_are_json_only_so_a_form_cannot_turn_a_setting_off(client: APIClient) -> None:
    set_on = client.put("/api/v1/notifications/preferences", {"previews": True}).json()
    assert set_on == {"previews": True, "mentions_when_muted": True}
    # An empty form used to read as {"previews": false} (HTML checkbox rules) and was applied.
    refused = client.put("/api/v1/notifications/preferences", {}, format="multipart")
    assert_error(refused, 415, "unsupported_media_type")
    assert client.get("/api/v1/notifications/preferences").json() == {
        "previews": True,
        "mentions_when_muted": True,
    }


def test_uploads_still_take_multipart(client: APIClient, settings: Any, tmp_path: Any) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.authz import png

    settings.MEDIA_ROOT = str(tmp_path)
    upload = SimpleUploadedFile("x.png", png(), content_type="image/png")
    assert client.post("/api/v1/attachments", {"file": upload}, format="multipart").status_code == 201


def test_unmute_answers_200_with_the_state_as_documented(client: APIClient) -> None:
    from drf_spectacular.generators import SchemaGenerator

    patient: Any = client.user  # type: ignore[attr-defined]
    from messaging import services

    doctor = DoctorFactory.create()
    conversation, _ = services.conversation_open_direct(user=patient, peer_id=doctor.pk)
    response = client.delete(f"/api/v1/conversations/{conversation.pk}/mute")
    assert response.status_code == 200
    assert response.json() == {"conversation_id": conversation.pk, "muted": False, "muted_until": None}
    schema = SchemaGenerator().get_schema(request=None, public=True)
    assert "200" in schema["paths"]["/api/v1/conversations/{conversation_id}/mute"]["delete"]["responses"]


def test_list_endpoints_are_documented_as_the_pages_they_return(client: APIClient) -> None:
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    for path in ("/api/v1/conversations", "/api/v1/calls", "/api/v1/consultations", "/api/v1/doctors"):
        ok = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        page = schema["components"]["schemas"][ok["$ref"].rsplit("/", 1)[-1]]
        assert set(page["properties"]) == {"next", "previous", "results"}, path
        assert set(client.get(path).json()) == {"next", "previous", "results"}, path


def test_every_operation_documents_the_error_format() -> None:
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    assert schema["components"]["schemas"]["Error"]["required"] == ["error"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            default = operation["responses"]["default"]["content"]["application/json"]["schema"]
            assert default == {"$ref": "#/components/schemas/Error"}, (method, path)


def test_group_ids_that_do_not_exist_read_like_groups_you_are_not_in(client: APIClient) -> None:
    from groups import services as group_services

    owner = DoctorFactory.create()
    group = group_services.group_create(creator=owner, name="Not yours")
    for gid in (group.pk, 9_000_000_000_000):
        for response in (
            client.patch(f"/api/v1/groups/{gid}", {"name": "mine"}),
            client.post(f"/api/v1/groups/{gid}/members", {"user_id": owner.pk}),
            client.delete(f"/api/v1/groups/{gid}/members/{owner.pk}"),
            client.patch(f"/api/v1/groups/{gid}/members/{owner.pk}", {"role": "admin"}),
            client.post(f"/api/v1/groups/{gid}/leave"),
        ):
            error = assert_error(response, 404, "group_not_found")
            assert error["message"] == "No such group."


@pytest.mark.parametrize(
    ("method", "url", "body", "field"),
    [
        ("post", "/api/v1/devices", {"installation_id": 22484075082196544.0}, "installation_id"),
        ("post", "/api/v1/blocks", {"user_id": "12"}, "user_id"),
        ("put", "/api/v1/notifications/preferences", {"previews": "true"}, "previews"),
        ("post", "/api/v1/groups", {"name": "G", "member_ids": ["1"]}, "member_ids"),
        ("post", "/api/v1/groups", {"name": 7}, "name"),
    ],
)
def test_json_values_of_another_type_are_refused_not_coerced(
    client: APIClient, method: str, url: str, body: dict[str, Any], field: str
) -> None:
    # A number sent as a device's installation id used to be stored as "2.2484075082196544e+16".
    error = assert_error(getattr(client, method)(url, body), 400, "invalid")
    assert error["fields"][field][0]["code"] == "wrong_type"
