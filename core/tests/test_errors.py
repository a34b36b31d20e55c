"""The one REST error format holds for 400/401/403/404/405/429/500."""

import pytest
from rest_framework.test import APIClient

from conftest import unique_phone


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    return body["error"]


@pytest.fixture
def client() -> APIClient:
    return APIClient()


@pytest.mark.django_db
def test_400_validation_error_lists_fields(client, make_token):
    token = make_token(phone_number=unique_phone())
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    error = assert_error(
        client.post("/api/v1/auth/register", {"role": "wizard"}, format="json"), 400, "invalid"
    )
    assert error["fields"]["role"][0]["code"] == "invalid_choice"
    assert error["fields"]["display_name"][0]["code"] == "required"


@pytest.mark.django_db
def test_400_malformed_json(client, make_token):
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(phone_number=unique_phone())}")
    response = client.generic("POST", "/api/v1/auth/register", "{not json", content_type="application/json")
    assert_error(response, 400, "parse_error")


@pytest.mark.django_db
def test_401_without_token(client):
    assert_error(client.get("/api/v1/me"), 401, "not_authenticated")


@pytest.mark.django_db
def test_401_with_garbage_token(client):
    client.credentials(HTTP_AUTHORIZATION="Bearer not-a-jwt")
    assert_error(client.get("/api/v1/me"), 401, "invalid_token")


@pytest.mark.django_db
def test_403_unregistered_token_may_only_register(client, make_token):
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(phone_number=unique_phone())}")
    assert_error(client.get("/api/v1/me"), 403, "not_registered")


@pytest.mark.django_db
def test_404_unknown_api_url_is_json(client):
    assert_error(client.get("/api/v1/no-such-thing"), 404, "not_found")


@pytest.mark.django_db
def test_405_wrong_method(client, make_token):
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(phone_number=unique_phone())}")
    response = client.get("/api/v1/auth/register")
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response["Allow"]


@pytest.mark.django_db
@pytest.mark.urls("core.tests.urls_errors")
def test_429_throttled_has_retry_after(client):
    assert client.get("/api/v1/test/throttled").status_code == 200
    response = client.get("/api/v1/test/throttled")
    error = assert_error(response, 429, "rate_limited")
    assert error["retry_after"] >= 1
    assert int(response["Retry-After"]) >= 1


@pytest.mark.django_db
@pytest.mark.urls("core.tests.urls_errors")
def test_500_in_api_view_hides_details(client, caplog):
    client.raise_request_exception = False
    response = client.get("/api/v1/test/boom")
    assert_error(response, 500, "internal_error")
    assert b"secret internal detail" not in response.content
    assert b"Traceback" not in response.content


@pytest.mark.django_db
@pytest.mark.urls("core.tests.urls_errors")
def test_500_outside_drf_is_json_too(client):
    client.raise_request_exception = False
    response = client.get("/api/v1/test/plain-boom")
    assert_error(response, 500, "internal_error")
    assert b"secret internal detail" not in response.content
