"""Push REST API: mute a conversation, preferences."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.tests.factories import PatientFactory
from messaging.models import Membership
from messaging.tests.factories import pair

pytestmark = pytest.mark.django_db


def test_mute_until_unmuted_then_unmute(client_for):
    patient, _doctor, conversation = pair()
    client = client_for(patient)
    url = f"/api/v1/conversations/{conversation.pk}/mute"

    assert client.get(url).json() == {"conversation_id": conversation.pk, "muted": False, "muted_until": None}
    response = client.post(url, {}, format="json")
    assert response.status_code == 200
    assert response.json() == {"conversation_id": conversation.pk, "muted": True, "muted_until": None}
    membership = Membership.objects.get(conversation=conversation, user=patient)
    assert membership.muted_until is not None
    assert membership.muted_until.year == 9999

    response = client.delete(url)
    assert response.json()["muted"] is False
    membership.refresh_from_db()
    assert membership.muted_until is None


def test_mute_until_a_time(client_for):
    patient, _doctor, conversation = pair()
    until = (timezone.now() + dt.timedelta(hours=8)).replace(microsecond=0)
    response = client_for(patient).post(
        f"/api/v1/conversations/{conversation.pk}/mute", {"until": until.isoformat()}, format="json"
    )
    assert response.status_code == 200
    body = response.json()
    assert body["muted"] is True
    assert dt.datetime.fromisoformat(body["muted_until"]) == until
    assert Membership.objects.get(conversation=conversation, user=patient).muted_until == until


def test_mute_refuses_the_past_unknown_fields_and_non_members(client_for):
    patient, _doctor, conversation = pair()
    url = f"/api/v1/conversations/{conversation.pk}/mute"
    past = (timezone.now() - dt.timedelta(minutes=1)).isoformat()
    response = client_for(patient).post(url, {"until": past}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_mute_until"
    # Without its UTC offset (docs/protocol.md: invalid_mute_until), not read in the server's zone.
    naive = (timezone.now() + dt.timedelta(hours=8)).replace(tzinfo=None).isoformat()
    response = client_for(patient).post(url, {"until": naive}, format="json")
    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_mute_until")
    assert Membership.objects.get(conversation=conversation, user=patient).muted_until is None
    assert client_for(patient).post(url, {"forever": True}, format="json").status_code == 400
    stranger = client_for(PatientFactory())
    assert stranger.post(url, {}, format="json").status_code == 404
    assert stranger.get(url).status_code == 404
    assert APIClient().post(url, {}, format="json").status_code == 401


def test_preferences_default_and_update(client_for, settings):
    patient = PatientFactory()
    client = client_for(patient)
    url = "/api/v1/notifications/preferences"
    assert client.get(url).json() == {"previews": False, "mentions_when_muted": True}
    settings.PUSH_PREVIEWS_DEFAULT = True
    assert client.get(url).json() == {"previews": True, "mentions_when_muted": True}
    response = client.put(url, {"previews": False}, format="json")
    assert response.status_code == 200
    assert response.json() == {"previews": False, "mentions_when_muted": True}
    assert client.get(url).json() == {"previews": False, "mentions_when_muted": True}
    # A mute silences mentions too when asked (issue 24).
    quiet = client.put(url, {"previews": False, "mentions_when_muted": False}, format="json")
    assert quiet.json() == {"previews": False, "mentions_when_muted": False}
    # Left out by a client that knows only previews: unchanged.
    assert client.put(url, {"previews": True}, format="json").json() == {
        "previews": True,
        "mentions_when_muted": False,
    }
    assert client.put(url, {}, format="json").status_code == 400
