"""docs/erd.md is generated from the models and kept current."""

from django.core.management import call_command

from core.management.commands.erd import DEFAULT_PATH, render


def test_erd_is_current():
    assert DEFAULT_PATH.read_text() == render(), "run: python manage.py erd --write"
    call_command("erd", "--check")


def test_erd_names_every_constraint():
    text = render()
    for name in ("user_phone_e164", "doctor_licence_unique", "device_has_identifier"):
        assert name in text
