"""Credential redaction in log records (core/logs.py); the live proof is
tests/test_log_redaction_live.py."""

from __future__ import annotations

import logging

import pytest
from django.core import signing

from core.logs import REDACTED, redact


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            '"GET /a/1/content?token=abc:1x:sig HTTP/1.1" 200',
            f'"GET /a/1/content?token={REDACTED} HTTP/1.1" 200',
        ),
        ("GET /x?%74oken=abc&limit=5", f"GET /x?%74oken={REDACTED}&limit=5"),
        ("/ws/v1/?access_token=abc", f"/ws/v1/?access_token={REDACTED}"),
        ("b'x=1&token=abc'", f"b'x=1&token={REDACTED}'"),
        (
            "https://s3/k?X-Amz-Signature=ab12&X-Amz-Expires=300",
            f"https://s3/k?X-Amz-Signature={REDACTED}&X-Amz-Expires=300",
        ),
        ("< authorization: Bearer abc.def-ghi", f"< authorization: Bearer {REDACTED}"),
        ("< cookie: sessionid=abc; csrftoken=def", f"< cookie: {REDACTED}"),
        ("sk_live_abc rk_test_def whsec_ghi pi_3Ab_secret_Cd", " ".join([REDACTED] * 4)),
        # A credential that is a path segment: the public prescription check, a calendar feed.
        (
            '"GET /api/v1/prescriptions/verify/7K3M-9QZX-2RTB-8NPW HTTP/1.1" 200',
            f'"GET /api/v1/prescriptions/verify/{REDACTED} HTTP/1.1" 200',
        ),
        (
            "GET /api/v1/calendar/feeds/q2-Xk_9v0AbC/calendar.ics",
            f"GET /api/v1/calendar/feeds/{REDACTED}/calendar.ics",
        ),
        # Not credentials: left alone.
        (
            "code=invalid_token user=5 key=attachments/x.jpg",
            "code=invalid_token user=5 key=attachments/x.jpg",
        ),
        ("token expired for user 5", "token expired for user 5"),
        ("GET /api/v1/conversations?limit=50", "GET /api/v1/conversations?limit=50"),
        ("GET /api/v1/prescriptions/12/cancel", "GET /api/v1/prescriptions/12/cancel"),
    ],
)
def test_redact(line: str, expected: str) -> None:
    assert redact(line) == expected


def test_signed_values_and_jwts_are_redacted_wherever_they_appear(make_token) -> None:
    signed = signing.dumps({"a": 1, "u": 2, "v": "file"}, salt="x")
    jwt = make_token(uid="u1", phone_number="+12025550100")
    for secret in (signed, signed.replace(":", "%3A"), jwt):
        line = redact(f"frame {{'data': {{'token': '{secret}'}}}} /path/{secret} done")
        assert secret not in line
        assert secret.rsplit(".", 1)[-1].rsplit(":", 1)[-1] not in line
        assert line.endswith(" done")


def test_every_record_of_the_process_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    """Django's set-up (settings.LOGGING_CONFIG) installed the record factory: any logger, any
    handler, message, arguments (a tuple or, like runserver's access line, a mapping) and the
    traceback text."""
    logger = logging.getLogger("some.library")
    with caplog.at_level(logging.INFO, logger="some.library"):
        logger.info('%s - "%s %s" %d', "127.0.0.1:5", "GET", "/a?token=s3cr3tA", 200)
        logger.info(
            "HTTP %(method)s %(path)s %(status)s [%(time)0.2f]",
            {"method": "GET", "path": "/a?token=s3cr3tA", "status": 200, "time": 0.5},
        )
        try:
            raise ValueError("could not fetch https://host/a?token=s3cr3tA")
        except ValueError:
            logger.exception("failed /b?sig=s3cr3tB")
    text = caplog.text
    assert "s3cr3t" not in text
    assert '127.0.0.1:5 - "GET /a?token=[redacted]" 200' in text
    assert "HTTP GET /a?token=[redacted] 200 [0.50]" in text
    assert "ValueError: could not fetch https://host/a?token=[redacted]" in text
