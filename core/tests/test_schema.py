"""The OpenAPI schema is generated without errors or warnings and served with its docs."""

import pytest
from django.core.management import call_command
from django.test import Client


def test_schema_validates_without_warnings(tmp_path):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    text = out.read_text()
    assert "openapi: 3.0.3" in text
    assert "/api/v1/auth/register" in text


@pytest.mark.django_db
def test_schema_and_docs_are_served():
    client = Client()
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    assert "/api/v1/me" in schema.json()["paths"]
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger" in docs.content.lower()
