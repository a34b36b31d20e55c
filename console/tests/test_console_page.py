"""The console page: served at /console/ with its own strict CSP (scripts from this origin plus
the hash of its import map, which the browser checks); the SDK's modules and the vendored files
are served as static files; the socket accepts this server's own Origin and refuses others."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from django.test import Client

from console.views import import_map
from messaging.consumers import origin_allowed


@pytest.mark.django_db
def test_the_page_carries_a_strict_policy_with_its_import_map_hash() -> None:
    response = Client().get("/console/")
    assert response.status_code == 200
    policy = response["Content-Security-Policy"]
    html = response.content.decode()
    inline = re.search(r'<script type="importmap">(.*?)</script>', html, re.S)
    assert inline
    assert inline.group(1) == import_map()
    digest = base64.b64encode(hashlib.sha256(inline.group(1).encode()).digest()).decode()
    assert f"script-src 'self' 'sha256-{digest}';" in policy
    assert "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy
    assert "frame-ancestors 'none'" in policy
    assert "object-src 'none'" in policy
    assert response["X-Frame-Options"] == "DENY"
    # no other inline script: the config is a JSON data block
    scripts = re.findall(r"<script([^>]*)>", html)
    assert all("src=" in s or 'type="importmap"' in s or 'type="application/json"' in s for s in scripts)


def test_static_files_the_page_imports_are_served() -> None:
    from django.contrib.staticfiles import finders

    for path in (
        "console/sdk/index.js",
        "console/sdk/client.js",
        "console/sdk/generated/constants.js",
        "console/vendor/openapi-fetch.js",
        "console/vendor/firebase-auth.js",
        "console/js/main.js",
    ):
        assert finders.find(path), path


def test_the_socket_takes_its_own_origin_only() -> None:
    scope = {"headers": [(b"host", b"127.0.0.1:8000")]}
    assert origin_allowed(scope, "http://127.0.0.1:8000")
    assert not origin_allowed(scope, "http://127.0.0.1:8001")
    assert not origin_allowed(scope, "https://evil.example")
    assert not origin_allowed({"headers": []}, "http://127.0.0.1:8000")
