"""Security headers on API, admin and docs responses; CORS only for configured origins; HSTS in
production (a real uvicorn process on the production settings, behind a TLS-terminating proxy)."""

from __future__ import annotations

import re

import pytest
import requests
from django.test import Client

from accounts.tests.factories import PatientFactory

pytestmark = pytest.mark.django_db

ALLOWED = "https://app.healthchat.test"
OTHER = "https://evil.example"


def assert_common_headers(response) -> None:
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"


def csp(response) -> dict[str, list[str]]:
    """The response's Content-Security-Policy as {directive: [sources]}."""
    policy = response["Content-Security-Policy"]
    out = {}
    for part in policy.split(";"):
        name, *sources = part.split()
        out[name] = sources
    return out


def test_api_responses_carry_the_headers_and_a_no_content_policy(client_for_token):
    for response in (
        Client().get("/api/v1/me"),  # 401
        client_for_token.get("/api/v1/me"),  # 200
        Client().get("/api/v1/no-such-thing"),  # 404 from the error middleware
    ):
        assert_common_headers(response)
        assert csp(response) == {"default-src": ["'none'"], "frame-ancestors": ["'none'"]}
        assert "Access-Control-Allow-Origin" not in response


@pytest.fixture
def client_for_token(client_for):
    return client_for(PatientFactory())


def test_admin_pages_carry_a_strict_policy(django_user_model):
    staff = django_user_model.objects.create_superuser("+12025550111", "correct horse battery")
    client = Client()
    login = client.get("/admin/login/")
    client.force_login(staff)
    for response in (login, client.get("/admin/"), client.get("/admin/accounts/user/")):
        assert response.status_code == 200
        assert_common_headers(response)
        policy = csp(response)
        assert policy["default-src"] == ["'self'"]
        assert policy["script-src"] == ["'self'"]
        assert policy["style-src"] == ["'self'"]
        assert policy["frame-ancestors"] == ["'none'"]
        assert policy["object-src"] == ["'none'"]
        # The pages hold no inline script the policy would block.
        assert not re.search(rb"<script(?![^>]*\bsrc=)[^>]*>", response.content)


def test_docs_page_policy_allows_swagger_ui_and_no_inline_script(settings):
    response = Client().get("/api/docs/")
    assert response.status_code == 200
    assert_common_headers(response)
    policy = csp(response)
    dist = settings.SPECTACULAR_SETTINGS["SWAGGER_UI_DIST"].rstrip("/") + "/"
    assert policy["script-src"] == ["'self'", dist]
    assert policy["connect-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    html = response.content.decode()
    scripts = re.findall(r"<script([^>]*)>", html)
    assert scripts
    assert all("src=" in attrs for attrs in scripts), scripts  # nothing inline
    for src in re.findall(r'<script[^>]*src="([^"]+)"', html):
        assert src.startswith(("/api/docs/", dist)), src
    # The init script the page loads is served from the docs URL itself.
    script = Client().get("/api/docs/?script=")
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle" in script.content.decode()


PREFLIGHT = {
    "HTTP_ACCESS_CONTROL_REQUEST_METHOD": "POST",
    "HTTP_ACCESS_CONTROL_REQUEST_HEADERS": "authorization, content-type",
}


def test_no_cors_headers_by_default():
    response = Client().options("/api/v1/auth/register", HTTP_ORIGIN=ALLOWED, **PREFLIGHT)
    assert "Access-Control-Allow-Origin" not in response
    assert "Access-Control-Allow-Methods" not in response


def test_preflight_from_an_allowed_origin_gets_cors_headers(settings):
    settings.CORS_ALLOWED_ORIGINS = [ALLOWED]
    response = Client().options("/api/v1/auth/register", HTTP_ORIGIN=ALLOWED, **PREFLIGHT)
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == ALLOWED
    assert "POST" in response["Access-Control-Allow-Methods"]
    allowed_headers = {h.strip() for h in response["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed_headers
    assert "Access-Control-Allow-Credentials" not in response  # bearer tokens, no cookies
    assert "origin" in response["Vary"].lower()


def test_preflight_from_another_origin_gets_none(settings):
    settings.CORS_ALLOWED_ORIGINS = [ALLOWED]
    response = Client().options("/api/v1/auth/register", HTTP_ORIGIN=OTHER, **PREFLIGHT)
    assert "Access-Control-Allow-Origin" not in response
    assert "Access-Control-Allow-Methods" not in response


def test_actual_request_from_an_allowed_origin_exposes_retry_after(settings, client_for_token):
    settings.CORS_ALLOWED_ORIGINS = [ALLOWED]
    response = client_for_token.get("/api/v1/me", HTTP_ORIGIN=ALLOWED)
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == ALLOWED
    assert "Retry-After" in response["Access-Control-Expose-Headers"]
    other = client_for_token.get("/api/v1/me", HTTP_ORIGIN=OTHER)
    assert "Access-Control-Allow-Origin" not in other


def test_admin_gets_no_cors_headers_even_for_an_allowed_origin(settings):
    settings.CORS_ALLOWED_ORIGINS = [ALLOWED]
    response = Client().options("/admin/login/", HTTP_ORIGIN=ALLOWED, **PREFLIGHT)
    assert "Access-Control-Allow-Origin" not in response


# --- production settings on a real server -----------------------------------------------------
PRODUCTION_ENV = {
    "DJANGO_SETTINGS_MODULE": "healthchat.settings.production",
    "SECRET_KEY": "x" * 50,
    "ALLOWED_HOSTS": "127.0.0.1",
    "STRIPE_SECRET_KEY": "sk_test_headers",
    "STRIPE_WEBHOOK_SECRET": "whsec_headers",
    "PAYMENTS_PROVIDER": "stripe",
    "STRIPE_API_BASE": "",
    "FIREBASE_DEV_TOKENS": "false",
    "FIREBASE_AUTH_EMULATOR_HOST": "",
    "DEBUG": "false",
    "CORS_ALLOWED_ORIGINS": ALLOWED,
}


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_production_server_sends_hsts_and_redirects_plain_http(live_server_factory):
    server = live_server_factory(PRODUCTION_ENV)
    https = {"X-Forwarded-Proto": "https"}  # as the TLS-terminating proxy forwards it
    response = requests.get(f"{server.base_url}/api/v1/me", headers=https, timeout=5, allow_redirects=False)
    assert response.status_code == 401
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
    admin = requests.get(f"{server.base_url}/admin/login/", headers=https, timeout=5, allow_redirects=False)
    assert admin.status_code == 200
    assert "Strict-Transport-Security" in admin.headers
    assert "script-src 'self';" in admin.headers["Content-Security-Policy"]
    # CORS from the environment: the allowed origin only.
    preflight = {
        **https,
        "Origin": ALLOWED,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    allowed = requests.options(f"{server.base_url}/api/v1/me", headers=preflight, timeout=5)
    assert allowed.headers["Access-Control-Allow-Origin"] == ALLOWED
    refused = requests.options(
        f"{server.base_url}/api/v1/me", headers={**preflight, "Origin": OTHER}, timeout=5
    )
    assert "Access-Control-Allow-Origin" not in refused.headers
    # Plain HTTP is redirected to HTTPS (and gets no HSTS: browsers ignore it there).
    plain = requests.get(f"{server.base_url}/api/v1/me", timeout=5, allow_redirects=False)
    assert plain.status_code == 301
    assert plain.headers["Location"] == f"https://127.0.0.1:{server.port}/api/v1/me"
    assert "Strict-Transport-Security" not in plain.headers
