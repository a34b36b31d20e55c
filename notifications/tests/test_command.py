"""``manage.py send_test_push``: the operator's check that push reaches a user's phones."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.tests.factories import DeviceFactory, PatientFactory
from notifications.models import PushDelivery

from .conftest import UNREGISTERED

pytestmark = pytest.mark.django_db


def test_send_test_push_by_phone(fake_fcm):
    user = PatientFactory()
    device = DeviceFactory(user=user, fcm_token="operator-token", installation_id=None)
    out = StringIO()
    call_command("send_test_push", user.phone_number, stdout=out)
    assert "sent" in out.getvalue()
    assert [m["token"] for m in fake_fcm.messages] == [device.fcm_token]
    assert fake_fcm.messages[0]["notification"]["title"] == "healthchat test notification"
    assert PushDelivery.objects.get().state == PushDelivery.State.SENT


def test_send_test_push_reports_a_dead_token(fake_fcm):
    user = PatientFactory()
    DeviceFactory(user=user, fcm_token="dead-token", installation_id=None)
    fake_fcm.script("dead-token", UNREGISTERED)
    out = StringIO()
    with pytest.raises(CommandError, match="no test push was accepted"):
        call_command("send_test_push", str(user.pk), stdout=out)
    assert "UNREGISTERED" in out.getvalue()


def test_send_test_push_without_devices_or_user():
    user = PatientFactory()
    with pytest.raises(CommandError, match="no device"):
        call_command("send_test_push", str(user.pk))
    with pytest.raises(CommandError, match="No user"):
        call_command("send_test_push", "999999999")
