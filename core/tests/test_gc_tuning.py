"""HEALTHCHAT_GC_THRESHOLD: parsed strictly, applied once the server application is loaded."""

import gc

import pytest

from core import gc_tuning


def test_the_threshold_setting_is_parsed_strictly():
    assert gc_tuning.parse_threshold("50000,20,100") == (50000, 20, 100)
    assert gc_tuning.parse_threshold(" 1000 ") == (1000,)
    assert gc_tuning.parse_threshold("") is None
    for bad in ("0,10,10", "1,2,3,4", "a,b", "-5"):
        with pytest.raises(ValueError):
            gc_tuning.parse_threshold(bad)


def test_a_server_process_gets_the_thresholds_and_freezes_what_start_up_loaded(settings):
    before = gc.get_threshold()
    settings.HEALTHCHAT_GC_THRESHOLD = "40000,15,90"
    try:
        assert gc_tuning.tune_for_server() == (40000, 15, 90)
        assert gc.get_threshold() == (40000, 15, 90)
        assert gc.get_freeze_count() > 0
        settings.HEALTHCHAT_GC_THRESHOLD = ""
        assert gc_tuning.tune_for_server() is None
        assert gc.get_threshold() == (40000, 15, 90)  # left as it was
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def test_the_asgi_application_applies_the_setting():
    from django.conf import settings as django_settings

    import healthchat.asgi  # noqa: F401  (imported by the server: tune_for_server ran)

    expected = gc_tuning.parse_threshold(django_settings.HEALTHCHAT_GC_THRESHOLD)
    assert expected is not None
    assert gc.get_threshold() == expected
